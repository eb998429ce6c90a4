# Static consistency check of the iOS project (ios/project.yml, the Swift sources under ios/,
# ios/build-xcframework) against itself and the release files (fastlane/Matchfile, Appfile).
# Nothing here can run XcodeGen, Xcode or the Swift compiler, so it checks what a reading can,
# the mistakes that would otherwise only show on a Mac:
#   1. the spec parses (Psych), has the four targets with their types, every `sources` path
#      exists (Generated/ and Frameworks/SocialVPNCore.xcframework: ios/build-xcframework
#      writes them), every Swift file is in some target;
#   2. the extension's principal class is a top-level NEPacketTunnelProvider subclass in the
#      extension's own sources, its extension point the packet tunnel;
#   3. the bundle ids agree with the Matchfile, the Appfile and Shared.tunnelBundleId, and the
#      Release configs sign with `match AppStore <id>`;
#   4. app and extension share the Network Extension, App Group and Keychain entitlements
#      (the group the Swift code names, the Keychain group Info.plist hands it);
#   5. every file that uses the bindings (SocialVPNCore) imports them, and every target that
#      imports a module of the project depends on it;
#   6. @Observable / Observation only with an iOS 17 deployment target.
# Swift is read with a small lexer (comments and string literals blanked, interpolations kept),
# not patterns over raw text. Before the real check a self-test runs it on copies of ios/ and
# fastlane/ with one mistake each, which must each be refused.
# Prints one line when sound, otherwise every problem, and exits 1.
# Usage: ruby scripts/check-ios-project.rb [ROOT] [--no-self-test]   (ROOT: the repository)
require "fileutils"
require "psych"
require "ripper"
require "tmpdir"

REPO = File.expand_path("..", __dir__)
TARGET_TYPES = {
  "SocialVPNCore" => "framework", "SocialVPN" => "application",
  "SocialVPNTunnel" => "app-extension", "SocialVPNTests" => "bundle.unit-test",
}.freeze
CORE, APP, EXT = "SocialVPNCore", "SocialVPN", "SocialVPNTunnel"
PACKET_TUNNEL_POINT = "com.apple.networkextension.packet-tunnel"
PACKET_TUNNEL_ENTITLEMENT = "packet-tunnel-provider"
NETWORK_EXTENSION = "com.apple.developer.networking.networkextension"
APP_GROUPS = "com.apple.security.application-groups"
KEYCHAIN_GROUPS = "keychain-access-groups"
KEYCHAIN_INFO_KEY = "SocialVPNKeychainGroup"
OBSERVATION_IOS = "17.0"
# Names only the uniffi bindings define. More come from bindings/src when it is there (the
# exported functions, records, enums, objects, errors and foreign traits).
BINDING_FUNCTIONS = %w[encodeControlRequest decodeControlReply describeState describeError describeLink
                       describeSignInError findTunnelFd oauthBrowserSignIn oauthTokenFromRedirect setLogLevel].freeze
BINDING_TYPES = %w[SocialVpn VpnConfig TunnelSettings ControlRequest ControlReply ControlEvent VpnState VpnError].freeze
# Build output under ios/ that is not ours to check.
SKIP_DIRS = %w[Generated Frameworks build DerivedData .build].freeze

# --- Swift ------------------------------------------------------------------------------------

# [text, code] of a Swift source: comments blanked in both, string literals' contents (not their
# quotes, not the code of their interpolations) blanked in code. Both are binary strings of the
# source's byte length with every newline kept, so offsets and line numbers agree.
def swift_scan(source)
  src = source.b
  text = src.dup
  code = src.dup
  n = src.bytesize
  blank = lambda do |from, to, both|
    (from...to).each do |k|
      next if src.getbyte(k) == 10
      code.setbyte(k, 32)
      text.setbyte(k, 32) if both
    end
  end
  interp = [] # open interpolations, innermost last: [string's hashes, multi-line, paren depth]
  str = nil   # [hashes, multi-line] inside a string literal's text
  i = 0
  while i < n
    c = src[i]
    if str
      hashes, multi = str
      close = (multi ? '"""' : '"') + "#" * hashes
      if src[i, close.bytesize] == close
        i += close.bytesize
        str = nil
      elsif c == "\\" && src[i + 1, hashes] == "#" * hashes
        j = i + 1 + hashes
        blank.(i, j + 1, false)
        if src[j] == "("
          interp << [hashes, multi, 0]
          str = nil
        end
        i = j + 1
      elsif c == "\n" && !multi
        str = nil # unterminated: the compiler's problem, not ours
        i += 1
      else
        blank.(i, i + 1, false)
        i += 1
      end
    elsif c == "/" && src[i + 1] == "/"
      j = src.index("\n", i) || n
      blank.(i, j, true)
      i = j
    elsif c == "/" && src[i + 1] == "*"
      depth = 0
      j = i
      while j < n
        if src[j, 2] == "/*" then depth += 1
                                  j += 2
        elsif src[j, 2] == "*/" then depth -= 1
                                     j += 2
                                     break if depth.zero?
        else j += 1
        end
      end
      blank.(i, j, true)
      i = j
    elsif (c == '"' || c == "#") && (m = /\G(#*)("""|")/n.match(src, i))
      str = [m[1].size, m[2] == '"""']
      i += m[0].bytesize
    elsif c == "(" && interp.any?
      interp[-1][2] += 1
      i += 1
    elsif c == ")" && interp.any?
      if interp[-1][2].zero?
        hashes, multi, = interp.pop
        blank.(i, i + 1, false)
        str = [hashes, multi]
      else
        interp[-1][2] -= 1
      end
      i += 1
    else
      i += 1
    end
  end
  [text, code]
end

SwiftFile = Struct.new(:path, :text, :code, :imports, :top_decls, :decls) do
  def line_at(offset) = code[0, offset].count("\n") + 1
  def depth_at(offset) = code[0, offset].count("{") - code[0, offset].count("}")

  # {name => line} of the binding names this file refers to by themselves (not as `.member`,
  # not a declaration or argument label of its own).
  def uses(functions, types)
    found = {}
    names = (functions + types).uniq.sort_by { |s| -s.size }
    code.scan(/(?<![\w.$`])(?:#{names.join('|')})(?![\w`])/n) do
      m = Regexp.last_match
      name = m[0]
      before = code[0, m.begin(0)]
      next if before =~ /\b(?:func|class|struct|enum|protocol|typealias|actor|case|let|var)\s+\z/n
      next if functions.include?(name) && !types.include?(name) && m.post_match =~ /\A\s*:(?!:)/n # a label
      next if decls.include?(name)
      found[name] ||= line_at(m.begin(0))
    end
    found
  end
end

def read_swift(root, rel)
  text, code = swift_scan(File.read(File.join(root, rel)))
  imports = {}
  code.scan(/^[ \t]*(?:@\w+[ \t]+)*import[ \t]+(?:(?:typealias|struct|class|enum|protocol|let|var|func)[ \t]+)?(\w+)/n) do
    imports[Regexp.last_match(1).force_encoding("UTF-8")] ||= code[0, Regexp.last_match.begin(0)].count("\n") + 1
  end
  f = SwiftFile.new(rel, text, code, imports, [], [])
  code.scan(/\b(?:func|class|struct|enum|protocol|typealias|actor)\s+(\w+)/n) do
    name = Regexp.last_match(1).force_encoding("UTF-8")
    f.decls << name
    f.top_decls << name if f.depth_at(Regexp.last_match.begin(0)).zero?
  end
  f
end

# The exported names of the bindings' Rust sources, as uniffi names them in Swift.
def binding_names(root)
  functions = []
  types = []
  Dir.glob(File.join(root, "bindings/src/**/*.rs")).sort.each do |file|
    rs = File.read(file).gsub(%r{//[^\n]*}, "")
    attrs = /(?:\s*#\[[^\]]*\])*\s*pub\s+/
    rs.scan(/#\[uniffi::export(\([^)]*\))?\]#{attrs}(?:async\s+)?(fn|trait)\s+(\w+)/) do |args, kind, name|
      name = Regexp.last_match(1) if args.to_s =~ /name\s*=\s*"(\w+)"/
      kind == "fn" ? functions << name.gsub(/_([a-z0-9])/) { Regexp.last_match(1).upcase } : types << name
    end
    rs.scan(/#\[derive\(([^)]*)\)\]#{attrs}(?:struct|enum)\s+(\w+)/) do |derives, name|
      types << name if derives =~ /uniffi::(?:Record|Enum|Object|Error)/
    end
  end
  [functions, types]
end

# --- the check --------------------------------------------------------------------------------

class IosCheck
  attr_reader :errors, :summary

  def initialize(root)
    @root = root
    @errors = []
    @summary = nil
  end

  def fail!(msg) = @errors << msg
  def path(rel) = File.join(@root, rel)

  def run
    spec = load_spec or return self
    all = spec["targets"].is_a?(Hash) ? spec["targets"] : {}
    all.each { |name, t| fail!("ios/project.yml: target #{name} is #{t.inspect}, not a mapping") unless t.is_a?(Hash) }
    @targets = all.select { |_, t| t.is_a?(Hash) }
    fail!("ios/project.yml: no targets") if @targets.empty?
    TARGET_TYPES.each do |name, type|
      t = @targets[name]
      next fail!("ios/project.yml: no target #{name} (#{type})") unless t.is_a?(Hash)
      fail!("ios/project.yml: target #{name} has type #{t['type'].inspect}, wants #{type}") unless t["type"] == type
      fail!("ios/project.yml: target #{name} has platform #{t['platform'].inspect}, wants iOS") unless t["platform"] == "iOS"
    end
    return self unless TARGET_TYPES.keys.all? { |name| @targets.key?(name) } # the rest would only echo it
    check_schemes(spec)
    check_sources
    check_generated
    check_principal_class
    check_bundle_ids
    check_entitlements
    check_bindings
    check_deployment_target(spec)
    @summary = "ios project: #{@targets.size} targets, #{@swift.size} Swift files " \
               "(#{@targets.map { |n, _| "#{n} #{target_files(n).size}" }.join(', ')}), " \
               "#{@swift.count { |f| f.imports.key?(CORE) }} import #{CORE}, " \
               "#{@binding_functions.size + @binding_types.size} binding names; " \
               "#{@app_id} + #{@ext_id}, principal class #{@principal} — ok"
    self
  end

  def load_spec
    file = "ios/project.yml"
    return fail!("#{file}: missing") && nil unless File.file?(path(file))
    doc = Psych.safe_load(File.read(path(file)), filename: file)
    return fail!("#{file}: not a mapping") && nil unless doc.is_a?(Hash)
    doc
  rescue Psych::Exception => e
    fail!("#{file}: YAML: #{e.message}")
    nil
  end

  def check_schemes(spec)
    (spec["schemes"] || {}).each do |scheme, s|
      names = [s.dig("build", "targets"), s.dig("test", "targets")].flat_map do |t|
        t.is_a?(Hash) ? t.keys : Array(t).map { |x| x.is_a?(Hash) ? x["name"] : x }
      end
      (names.compact.uniq - @targets.keys).each { |n| fail!("ios/project.yml: scheme #{scheme} names target #{n}, which is not defined") }
    end
  end

  # --- 1. sources -----------------------------------------------------------------------------

  # A target's sources: [{path:, excludes:, includes:, optional:, compiled:}], paths relative to ios/.
  def sources(name)
    t = @targets[name]
    return [] unless t.is_a?(Hash)
    Array(t["sources"]).filter_map do |s|
      s = { "path" => s } if s.is_a?(String)
      next unless s.is_a?(Hash) && s["path"].is_a?(String)
      { path: s["path"].sub(%r{\A\./}, "").chomp("/"), excludes: Array(s["excludes"]), includes: s["includes"] && Array(s["includes"]),
        optional: s["optional"] == true, compiled: [nil, "sources"].include?(s["buildPhase"]) }
    end
  end

  def in_source?(file_in_ios, src)
    return false unless src[:compiled]
    p = src[:path]
    return true if file_in_ios == p
    return false unless file_in_ios.start_with?("#{p}/")
    inner = file_in_ios.delete_prefix("#{p}/")
    flags = File::FNM_PATHNAME | File::FNM_EXTGLOB
    return false if src[:excludes].any? { |g| File.fnmatch(g, inner, flags) }
    src[:includes].nil? || src[:includes].any? { |g| File.fnmatch(g, inner, flags) }
  end

  def target_files(name)
    @files_of ||= {}
    @files_of[name] ||= @swift.select { |f| sources(name).any? { |s| in_source?(f.path.delete_prefix("ios/"), s) } }
  end

  def targets_of(file) = @targets.keys.select { |n| target_files(n).include?(file) }

  # Paths the spec names that ios/build-xcframework makes.
  def generated_path?(p) = p == "Generated" || p.start_with?("Generated/", "Frameworks/")

  def check_sources
    rels = Dir.glob("**/*.swift", base: path("ios")).reject { |r| SKIP_DIRS.include?(r.split("/").first) || r.include?(".xcodeproj/") }
    @swift = rels.sort.map { |r| read_swift(@root, "ios/#{r}") }
    @targets.each_key do |name|
      sources(name).each do |s|
        next if s[:optional] || generated_path?(s[:path]) || File.exist?(path("ios/#{s[:path]}"))
        fail!("ios/project.yml: target #{name} has source #{s[:path]}, which is not in ios/")
      end
    end
    @swift.each do |f|
      next if @targets.keys.any? { |n| target_files(n).include?(f) }
      fail!("#{f.path}: in no target's sources (ios/project.yml), so never compiled")
    end
  end

  # ios/build-xcframework must write what the spec expects from it: the Swift bindings into
  # Generated/ (under the name uniffi gives them) and the XCFramework the core links.
  def check_generated
    script = "ios/build-xcframework"
    return fail!("#{script}: missing") unless File.file?(path(script))
    cmds = File.read(path(script)).lines.map { |l| l.sub(/(?:\A|\s)#.*/, "").strip }.reject(&:empty?)
    words = ->(l) { l.split(/\s+/).map { |w| w.delete(%q("')) } }
    uniffi = File.file?(path("bindings/uniffi.toml")) ? File.read(path("bindings/uniffi.toml")) : ""
    swift_name = "#{uniffi[/^\s*module_name\s*=\s*"([^"]+)"/, 1] || CORE}.swift"
    ffi_name = uniffi[/^\s*ffi_module_name\s*=\s*"([^"]+)"/, 1]
    if sources(CORE).any? { |s| s[:path] == "Generated" }
      copied = cmds.any? do |l|
        w = words.(l)
        w[0] == "cp" && w[1..-2].any? { |a| File.basename(a) == swift_name } &&
          ["ios/Generated", "ios/Generated/", "ios/Generated/#{swift_name}"].include?(w[-1])
      end
      generated_there = cmds.any? { |l| l.include?("uniffi-bindgen") && l =~ %r{--out-dir\s+"?ios/Generated"?(\s|\z)} }
      unless copied || generated_there
        named = uniffi.empty? ? "" : ", uniffi's name for the module_name in bindings/uniffi.toml"
        fail!("#{script}: does not write ios/Generated/#{swift_name}#{named} (#{CORE}'s sources in ios/project.yml are Generated/)")
      end
      if copied && cmds.none? { |l| words.(l)[0, 2] == %w[mkdir -p] && words.(l).include?("ios/Generated") }
        fail!("#{script}: copies into ios/Generated/ without making it (mkdir -p ios/Generated)")
      end
      if ffi_name
        %W[#{ffi_name}.h #{ffi_name}.modulemap].each do |f|
          next if cmds.any? { |l| words.(l)[0] == "cp" && words.(l)[1..-2].any? { |a| File.basename(a) == f } }
          fail!("#{script}: does not copy #{f}, which uniffi makes for ffi_module_name #{ffi_name} (bindings/uniffi.toml)")
        end
      end
    end
    @targets.each do |name, t|
      Array(t.is_a?(Hash) && t["dependencies"]).each do |d|
        fw = d.is_a?(Hash) && d["framework"]
        next unless fw.is_a?(String) && !File.exist?(path("ios/#{fw}"))
        next if cmds.any? { |l| words.(l).each_cons(2).include?(["-output", "ios/#{fw}"]) }
        fail!("ios/project.yml: target #{name} links #{fw}, which is not in ios/ and #{script} does not make (-output ios/#{fw})")
      end
    end
  end

  # --- 2. the extension's principal class ------------------------------------------------------

  def check_principal_class
    ext = @targets[EXT]
    return unless ext.is_a?(Hash)
    nsext = ext.dig("info", "properties", "NSExtension")
    return fail!("ios/project.yml: #{EXT} info.properties has no NSExtension") unless nsext.is_a?(Hash)
    point = nsext["NSExtensionPointIdentifier"]
    fail!("ios/project.yml: #{EXT} NSExtensionPointIdentifier is #{point.inspect}, wants #{PACKET_TUNNEL_POINT}") unless point == PACKET_TUNNEL_POINT
    principal = nsext["NSExtensionPrincipalClass"].to_s
    unless (@principal = principal[/\A\$\(PRODUCT_MODULE_NAME\)\.(\w+)\z/, 1])
      return fail!("ios/project.yml: #{EXT} NSExtensionPrincipalClass is #{principal.inspect}, " \
                   "wants $(PRODUCT_MODULE_NAME).<class> (a Swift class is found by its module's name)")
    end
    decl = /^[ \t]*((?:@[\w.]+(?:\([^)\n]*\))?\s+|(?:public|open|internal|private|fileprivate|final)\s+)*)class\s+#{@principal}\b\s*(?:<[^>{]*>)?\s*(:[^{]*)?\{/n
    found = target_files(EXT).filter_map { |f| (m = decl.match(f.code)) && [f, m] }
    if found.empty?
      elsewhere = @swift.find { |f| decl.match?(f.code) }
      return fail!("ios/project.yml: #{EXT} NSExtensionPrincipalClass names #{@principal}, but no Swift file of #{EXT}'s " \
                   "sources (#{sources(EXT).map { |s| s[:path] }.join(', ')}) declares class #{@principal}" +
                   (elsewhere ? " (#{elsewhere.path} does, outside them)" : ""))
    end
    f, m = found.first
    where = "#{f.path}:#{f.line_at(m.begin(0))}: class #{@principal}"
    supers = m[2].to_s.delete_prefix(":").split(",").map { |s| s.strip.force_encoding("UTF-8") }
    unless %w[NEPacketTunnelProvider NetworkExtension.NEPacketTunnelProvider].include?(supers.first)
      fail!("#{where} is the extension's principal class but not a subclass of NEPacketTunnelProvider (inherits #{supers.first.inspect})")
    end
    fail!("#{where} is nested in another declaration; the principal class must be top-level") unless f.depth_at(m.begin(0)).zero?
    fail!("#{where} is #{Regexp.last_match(1)}; the system cannot find it by name") if m[1].to_s =~ /\b(private|fileprivate)\b/n
    fail!("#{where} subclasses NEPacketTunnelProvider without `import NetworkExtension`") unless f.imports.key?("NetworkExtension")
  end

  # --- 3. bundle ids and signing ---------------------------------------------------------------

  # A target's settings: base, and the named config's (case-insensitive) over it.
  def setting(name, key, config = nil)
    s = @targets.dig(name, "settings")
    return nil unless s.is_a?(Hash)
    base = s.key?("base") || s.key?("configs") || s.key?("groups") ? (s["base"] || {}) : s
    conf = config && (s["configs"] || {}).find { |k, _| k.to_s.casecmp?(config) }&.last
    conf.is_a?(Hash) && conf.key?(key) ? conf[key] : base[key]
  end

  # Literal strings of each call `name(...)` in a fastlane file.
  def fastlane_args(file, name)
    return fail!("#{file}: missing") && [] unless File.file?(path(file))
    tree = Ripper.sexp(File.read(path(file)))
    return fail!("#{file}: Ruby syntax error") && [] unless tree
    out = []
    walk = lambda do |n|
      return unless n.is_a?(Array)
      call = (n[0] == :command && n[1].is_a?(Array) && n[1][0..1] == [:@ident, name] && n[2]) ||
             (n[0] == :method_add_arg && n[1].is_a?(Array) && n[1][0] == :fcall && n[1][1][0..1] == [:@ident, name] && n[2])
      if call
        strs = []
        grab = ->(x) { x.is_a?(Array) && (x[0] == :@tstring_content ? strs << x[1] : x.each { |y| grab.(y) }) }
        grab.(call)
        out << strs
      end
      n.each { |c| walk.(c) }
    end
    walk.(tree)
    out
  end

  # `static let name = "..."` in the enum/struct Shared of ios/Shared/*.swift.
  def shared_constant(name)
    files = @swift.select { |f| f.path.start_with?("ios/Shared/") }
    files.each do |f|
      f.code.scan(/\b(?:enum|struct|class|extension)\s+Shared\b[^{]*\{/n) do
        start = Regexp.last_match.end(0)
        depth = 1
        stop = start
        stop += 1 while stop < f.code.bytesize && (depth += { "{" => 1, "}" => -1 }.fetch(f.code[stop], 0)).positive?
        body = f.text[start...stop]
        m = /\bstatic\s+let\s+#{name}\s*(?::\s*String\s*)?=\s*"([^"\\]*)"/n.match(body) or next
        return [m[1].force_encoding("UTF-8"), "#{f.path}:#{f.line_at(start + m.begin(0))}"]
      end
    end
    fail!("ios/Shared/*.swift: no `static let #{name} = \"...\"` in enum Shared")
    nil
  end

  def check_bundle_ids
    @app_id = setting(APP, "PRODUCT_BUNDLE_IDENTIFIER")
    @ext_id = setting(EXT, "PRODUCT_BUNDLE_IDENTIFIER")
    return fail!("ios/project.yml: #{APP} has no PRODUCT_BUNDLE_IDENTIFIER") unless @app_id.is_a?(String)
    return fail!("ios/project.yml: #{EXT} has no PRODUCT_BUNDLE_IDENTIFIER") unless @ext_id.is_a?(String)
    unless @ext_id.start_with?("#{@app_id}.") && @ext_id.size > @app_id.size + 1
      fail!("ios/project.yml: #{EXT}'s bundle id #{@ext_id} does not start with #{APP}'s #{@app_id}. (an embedded extension's must)")
    end
    match_ids = fastlane_args("fastlane/Matchfile", "app_identifier")
    if match_ids.size != 1 then fail!("fastlane/Matchfile: wants one app_identifier([...]), has #{match_ids.size}")
    elsif match_ids[0].sort != [@app_id, @ext_id].sort
      fail!("fastlane/Matchfile: app_identifier is #{match_ids[0].inspect}, ios/project.yml's bundle ids are #{[@app_id, @ext_id].inspect}")
    end
    app_ids = fastlane_args("fastlane/Appfile", "app_identifier")
    unless app_ids == [[@app_id]]
      fail!("fastlane/Appfile: app_identifier is #{app_ids.flatten.inspect}, ios/project.yml's #{APP} is #{@app_id.inspect}")
    end
    tunnel, where = shared_constant("tunnelBundleId")
    if tunnel && tunnel != @ext_id
      fail!("#{where}: Shared.tunnelBundleId is #{tunnel.inspect}, ios/project.yml's #{EXT} is #{@ext_id.inspect} (the app would not find its extension)")
    end
    [APP, EXT].each do |name|
      id = setting(name, "PRODUCT_BUNDLE_IDENTIFIER", "Release")
      want = "match AppStore #{id}"
      got = setting(name, "PROVISIONING_PROFILE_SPECIFIER", "Release")
      fail!("ios/project.yml: #{name} Release PROVISIONING_PROFILE_SPECIFIER is #{got.inspect}, wants #{want.inspect}") unless got == want
      style = setting(name, "CODE_SIGN_STYLE", "Release")
      fail!("ios/project.yml: #{name} Release sets a provisioning profile with CODE_SIGN_STYLE #{style.inspect}, wants Manual") if got && style != "Manual"
      identity = setting(name, "CODE_SIGN_IDENTITY", "Release").to_s
      fail!("ios/project.yml: #{name} Release CODE_SIGN_IDENTITY is #{identity.inspect}, an App Store profile wants Apple Distribution") if got && identity !~ /Distribution/
    end
  end

  # --- 4. entitlements and Info.plist ----------------------------------------------------------

  def check_entitlements
    ent = [APP, EXT].to_h { |n| [n, @targets.dig(n, "entitlements", "properties") || {}] }
    ent.each do |n, e|
      next if Array(e[NETWORK_EXTENSION]).include?(PACKET_TUNNEL_ENTITLEMENT)
      fail!("ios/project.yml: #{n} entitlements: #{NETWORK_EXTENSION} is #{e[NETWORK_EXTENSION].inspect}, wants [#{PACKET_TUNNEL_ENTITLEMENT}]")
    end
    groups = ent.transform_values { |e| Array(e[APP_GROUPS]) }
    if groups[APP] != groups[EXT]
      fail!("ios/project.yml: #{APP_GROUPS} differ: #{APP} #{groups[APP].inspect}, #{EXT} #{groups[EXT].inspect}")
    end
    groups.each do |n, g|
      fail!("ios/project.yml: #{n} entitlements: no #{APP_GROUPS}") if g.empty?
      g.reject { |x| x.to_s.start_with?("group.") }.each { |x| fail!("ios/project.yml: #{n} App Group #{x.inspect} must start with group.") }
    end
    app_group, where = shared_constant("appGroup")
    groups.each do |n, g|
      next if app_group.nil? || g.include?(app_group)
      fail!("#{where}: Shared.appGroup is #{app_group.inspect}, not in #{n}'s #{APP_GROUPS} #{g.inspect} (ios/project.yml)")
    end
    keychain = ent.transform_values { |e| Array(e[KEYCHAIN_GROUPS]) }
    if keychain[APP] != keychain[EXT]
      fail!("ios/project.yml: #{KEYCHAIN_GROUPS} differ: #{APP} #{keychain[APP].inspect}, #{EXT} #{keychain[EXT].inspect}")
    end
    keychain.each do |n, k|
      fail!("ios/project.yml: #{n} entitlements: no #{KEYCHAIN_GROUPS}") if k.empty?
      k.reject { |x| x.to_s =~ /\A\$\((AppIdentifierPrefix|TeamIdentifierPrefix)\)/ }.each do |x|
        fail!("ios/project.yml: #{n} #{KEYCHAIN_GROUPS} #{x.inspect} must start with $(AppIdentifierPrefix)")
      end
      info = @targets.dig(n, "info", "properties") || {}
      next if k.include?(info[KEYCHAIN_INFO_KEY])
      fail!("ios/project.yml: #{n} info.properties #{KEYCHAIN_INFO_KEY} is #{info[KEYCHAIN_INFO_KEY].inspect}, " \
            "not its #{KEYCHAIN_GROUPS} #{k.inspect}")
    end
    # Info.plist keys the Swift code reads must be in the Info.plist of each target it is in.
    @swift.each do |f|
      f.text.scan(/forInfoDictionaryKey:\s*"(\w+)"/n) do
        key = Regexp.last_match(1).force_encoding("UTF-8")
        line = f.line_at(Regexp.last_match.begin(0))
        targets_of(f).each do |n|
          info = @targets.dig(n, "info", "properties")
          next if info.nil? || info.key?(key) # no info: (tests) the generated Info.plist
          fail!("#{f.path}:#{line}: reads Info.plist key #{key}, which #{n}'s info.properties lacks (ios/project.yml)")
        end
      end
    end
  end

  # --- 5. the bindings and the modules of the project -----------------------------------------

  def dependencies(name) = Array(@targets.dig(name, "dependencies")).select { |d| d.is_a?(Hash) }

  def depends_on?(name, other) = dependencies(name).any? { |d| d["target"].to_s.split("/").last == other }

  def check_bindings
    extra_f, extra_t = binding_names(@root)
    @binding_functions = (BINDING_FUNCTIONS + extra_f).uniq
    @binding_types = (BINDING_TYPES + extra_t).uniq
    @swift.each do |f|
      targets = targets_of(f)
      own = targets.flat_map { |n| target_files(n).flat_map(&:top_decls) }.uniq
      used = f.uses(@binding_functions, @binding_types).reject { |name, _| own.include?(name) }
      if used.any? && !f.imports.key?(CORE)
        listed = used.first(3).map { |name, line| "#{name} (line #{line})" }.join(", ")
        fail!("#{f.path}:#{used.values.min}: uses #{listed}#{used.size > 3 ? ', ...' : ''} of the bindings " \
              "without `import #{CORE}`")
        targets.reject { |n| depends_on?(n, CORE) }.each do |n|
          fail!("#{f.path}: uses the bindings, but target #{n} (which compiles it) does not depend on #{CORE} (ios/project.yml)")
        end
      end
      # Every module of the project a file imports must be a dependency of each target it is in.
      f.imports.each do |mod, line|
        next unless @targets.key?(mod)
        targets.each do |n|
          next if n == mod || depends_on?(n, mod)
          fail!("#{f.path}:#{line}: imports #{mod}, but target #{n} (which compiles it) does not depend on #{mod} (ios/project.yml)")
        end
      end
    end
    # The core is a static framework: linked, never embedded (XcodeGen embeds an application's
    # dependencies unless `embed: false`); the extension is embedded in the app.
    embedded = ->(n, d) { d["embed"] == true || (d["embed"].nil? && @targets.dig(n, "type") == "application") }
    if setting(CORE, "MACH_O_TYPE") == "staticlib"
      @targets.each_key do |n|
        next unless dependencies(n).any? { |d| d["target"] == CORE && embedded.(n, d) }
        fail!("ios/project.yml: #{n} embeds #{CORE}, a static framework (MACH_O_TYPE staticlib); wants embed: false")
      end
    end
    ext_dep = dependencies(APP).find { |d| d["target"] == EXT }
    fail!("ios/project.yml: #{APP} does not embed #{EXT} (dependencies: - target: #{EXT})") unless ext_dep && embedded.(APP, ext_dep)
  end

  # --- 6. deployment target -------------------------------------------------------------------

  def version(v) = v.to_s.split(".").map(&:to_i)

  def check_deployment_target(spec)
    default = spec.dig("options", "deploymentTarget", "iOS")
    @swift.each do |f|
      m = /@Observable\b|@ObservationIgnored\b|^[ \t]*import[ \t]+Observation\b/n.match(f.code) or next
      what = m[0].strip.force_encoding("UTF-8")
      targets_of(f).each do |n|
        t = @targets[n]
        own = t["deploymentTarget"].is_a?(Hash) ? t["deploymentTarget"]["iOS"] : t["deploymentTarget"]
        base = setting(n, "IPHONEOS_DEPLOYMENT_TARGET")
        configs = (t.dig("settings", "configs") || {}).values.grep(Hash).filter_map { |c| c["IPHONEOS_DEPLOYMENT_TARGET"] }
        ([base || own || default] + configs).uniq.each do |v|
          next if v && (version(v) <=> version(OBSERVATION_IOS)) >= 0
          fail!("#{f.path}:#{f.line_at(m.begin(0))}: #{what} needs iOS #{OBSERVATION_IOS}, target #{n}'s deployment target is " \
                "#{v.inspect} (ios/project.yml)")
        end
      end
    end
  end
end

# --- self-test --------------------------------------------------------------------------------

# Each: what, file, old, new, what the refusal must say (one or more; no line numbers, which
# move with every edit of the Swift). The first `old` in the
# file is replaced; it must be there (a self-test that silently stopped testing anything would
# be worse than none).
BROKEN = [
  ["a wrong principal class", "ios/project.yml", "$(PRODUCT_MODULE_NAME).PacketTunnelProvider",
   "$(PRODUCT_MODULE_NAME).PacketTunnel", "no Swift file of SocialVPNTunnel's sources (Tunnel, Shared) declares class PacketTunnel"],
  ["a missing import SocialVPNCore", "ios/App/TunnelClient.swift", "import SocialVPNCore\n", "",
   "ios/App/TunnelClient.swift:", "uses ControlRequest (line "],
  ["a mismatched app group (Swift)", "ios/Shared/SharedAccount.swift", 'static let appGroup = "group.org.socialvpn.app"',
   'static let appGroup = "group.org.socialvpn"', "Shared.appGroup is \"group.org.socialvpn\""],
  ["a mismatched app group (extension)", "ios/project.yml",
   "path: Tunnel/SocialVPNTunnel.entitlements\n      properties:\n        com.apple.developer.networking.networkextension: [packet-tunnel-provider]\n" \
   "        com.apple.security.application-groups: [group.org.socialvpn.app]",
   "path: Tunnel/SocialVPNTunnel.entitlements\n      properties:\n        com.apple.developer.networking.networkextension: [packet-tunnel-provider]\n" \
   "        com.apple.security.application-groups: [group.org.socialvpn.tunnel]",
   "application-groups differ", "not in SocialVPNTunnel's"],
  ["a missing import in Shared/", "ios/Shared/EngineConfig.swift", "import SocialVPNCore\n", "// import SocialVPNCore\n",
   "ios/Shared/EngineConfig.swift:", "uses VpnConfig"],
  ["the principal class not a tunnel provider", "ios/Tunnel/PacketTunnelProvider.swift",
   "class PacketTunnelProvider: NEPacketTunnelProvider", "class PacketTunnelProvider: NSObject", "not a subclass of NEPacketTunnelProvider"],
  ["a wrong extension point", "ios/project.yml", "com.apple.networkextension.packet-tunnel", "com.apple.networkextension.app-proxy",
   "NSExtensionPointIdentifier"],
  ["an extension id outside the app's", "ios/project.yml", "PRODUCT_BUNDLE_IDENTIFIER: org.socialvpn.app.tunnel",
   "PRODUCT_BUNDLE_IDENTIFIER: org.socialvpn.tunnel", "does not start with"],
  ["a Matchfile without the extension", "fastlane/Matchfile", ', "org.socialvpn.app.tunnel"', "", "fastlane/Matchfile: app_identifier"],
  ["a wrong profile", "ios/project.yml", "match AppStore org.socialvpn.app.tunnel", "match AppStore org.socialvpn.app",
   "PROVISIONING_PROFILE_SPECIFIER"],
  ["a wrong tunnelBundleId", "ios/Shared/SharedAccount.swift", '"org.socialvpn.app.tunnel"', '"org.socialvpn.tunnel"',
   "Shared.tunnelBundleId"],
  ["a different keychain group in Info.plist", "ios/project.yml", "SocialVPNKeychainGroup: $(AppIdentifierPrefix)org.socialvpn.app",
   "SocialVPNKeychainGroup: $(AppIdentifierPrefix)org.socialvpn", "SocialVPNKeychainGroup"],
  ["the extension not depending on the core", "ios/project.yml", "    sources: [Tunnel, Shared]\n    dependencies:\n      - target: SocialVPNCore\n        embed: false\n",
   "    sources: [Tunnel, Shared]\n    dependencies:\n", "target SocialVPNTunnel (which compiles it) does not depend on SocialVPNCore"],
  ["a source directory gone", "ios/project.yml", "sources: [Tests]", "sources: [UnitTests]", "has source UnitTests"],
  ["iOS 16", "ios/project.yml", 'iOS: "17.0"', 'iOS: "16.0"', "needs iOS 17.0, target SocialVPN's deployment target is \"16.0\""],
  ["bindings written elsewhere", "ios/build-xcframework", 'cp "$work/swift/SocialVPNCore.swift" ios/Generated/',
   'cp "$work/swift/SocialVPNCore.swift" ios/Bindings/', "does not write ios/Generated/SocialVPNCore.swift"],
  ["a YAML error", "ios/project.yml", "targets:", "targets: [", "ios/project.yml: YAML"],
].freeze

# Then a copy with a Swift file outside every target, one calling the bindings in an
# interpolation (both refused) and one naming them only in strings and comments (accepted).
def self_test
  Dir.mktmpdir("check-ios-project") do |tmp|
    copy = lambda do
      FileUtils.rm_rf(File.join(tmp, "repo"))
      FileUtils.mkdir_p(File.join(tmp, "repo/bindings"))
      FileUtils.mkdir_p(File.join(tmp, "repo/ios"))
      ios = Dir.children(File.join(REPO, "ios")).reject { |c| SKIP_DIRS.include?(c) || c.end_with?(".xcodeproj") }
      (ios.map { |c| "ios/#{c}" } + %w[fastlane bindings/uniffi.toml bindings/src]).each do |rel|
        FileUtils.cp_r(File.join(REPO, rel), File.join(tmp, "repo", rel)) if File.exist?(File.join(REPO, rel))
      end
      File.join(tmp, "repo")
    end
    base = IosCheck.new(copy.()).run.errors
    problems = []
    refused = 0
    BROKEN.each do |what, file, old, new, *says|
      root = copy.()
      s = File.read(File.join(root, file))
      i = s.index(old) or abort("check-ios-project self-test: #{old.inspect} is not in #{file}")
      s[i, old.size] = new
      File.write(File.join(root, file), s)
      errors = IosCheck.new(root).run.errors - base
      if errors.empty?
        problems << "a copy with #{what} passed the check"
      elsif says.any? { |x| errors.none? { |e| e.include?(x) } }
        problems << "a copy with #{what} failed without saying #{says.inspect}:\n    #{errors.join("\n    ")}"
      else
        refused += 1
      end
    end
    root = copy.()
    FileUtils.mkdir_p(File.join(root, "ios/Extra"))
    File.write(File.join(root, "ios/Extra/Stray.swift"), "import Foundation\n")
    File.write(File.join(root, "ios/App/Quoted.swift"),
               "import Foundation\n// describeState(state: s), VpnError\n/* SocialVpn /* nested */ VpnConfig */\n" \
               "let a = \"VpnState \\(1 + (2)) describeError(\"\nlet b = #\"\\(VpnError)\"#\nlet c = \"\"\"\n  TunnelSettings \\\"\n\"\"\"\n")
    File.write(File.join(root, "ios/App/Interpolated.swift"), "import Foundation\nlet d = \"\\(describeLink(link: l))\"\n")
    errors = IosCheck.new(root).run.errors - base
    expect = ["ios/Extra/Stray.swift: in no target's sources", "ios/App/Interpolated.swift:2: uses describeLink"]
    expect.each { |x| errors.any? { |e| e.include?(x) } ? refused += 1 : problems << "a copy with a stray file was not refused with #{x.inspect}" }
    (errors - errors.select { |e| expect.any? { |x| e.include?(x) } }).each { |e| problems << "a valid file was refused: #{e}" }
    unless problems.empty?
      warn "check-ios-project self-test: #{problems.size} failure(s):"
      problems.each { |p| warn "  #{p}" }
      exit 1
    end
    puts "check-ios-project self-test: #{refused} broken copies refused"
  end
end

# --- main -------------------------------------------------------------------------------------

args = ARGV.reject { |a| a == "--no-self-test" }
self_test unless ARGV.include?("--no-self-test")
check = IosCheck.new(File.expand_path(args.fetch(0, REPO))).run
if check.errors.empty?
  puts check.summary
else
  warn "check-ios-project: #{check.errors.uniq.size} problem(s):"
  check.errors.uniq.each { |e| warn "  #{e}" }
  exit 1
end
