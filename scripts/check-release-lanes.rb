# Static check of the release lanes (fastlane/) and the hosted-CI workflows
# (.github/workflows/) under the directory given as the argument; scripts/check-release-lanes
# runs it after `ruby -c`. Nothing here can run fastlane, Gradle or Xcode, so it checks what a
# reading can: the Fastfile parsed with Ripper (Ruby's own parser, not patterns) for the
# lanes, the actions each calls and their key options; no literal secret; the workflows
# parsed with Psych for their triggers and the steps that matter. Prints one line when sound,
# otherwise every problem, and exits 1.
require "ripper"
require "psych"

ROOT = ARGV.fetch(0)
VERBOSE = ARGV.include?("-v") # also list each lane's actions
IOS_PROJECT = "ios/SocialVPN.xcodeproj"
PACKAGE = "org.socialvpn.app"

# What each lane must end up calling (through helper methods and lane switches too), and
# literal strings it must contain (Gradle tasks, the scripts `sh` runs).
REQUIRED = {
  "android" => {
    "build" => { actions: %w[gradle], strings: %w[assembleRelease bundleRelease] },
    "internal" => { actions: %w[gradle upload_to_play_store], strings: %w[bundleRelease] },
    "emulator_tests" => { actions: %w[gradle], strings: %w[connectedAndroidTest] },
  },
  "ios" => {
    "build" => { actions: %w[sh match increment_build_number build_app],
                 strings: ["../ios/build-xcframework", "xcodegen generate"] },
    "beta" => { actions: %w[build_app app_store_connect_api_key upload_to_testflight], strings: [] },
    "tests" => { actions: %w[sh run_tests], strings: ["../ios/build-xcframework", "xcodegen generate"] },
  },
}.freeze

# Options whose value must be what SocialVPN's project needs (resolved through constants).
EXPECTED_OPTIONS = {
  "gradle" => { "project_dir" => "android" },
  "match" => { "type" => "appstore", "readonly" => true },
  "increment_build_number" => { "xcodeproj" => IOS_PROJECT },
  "build_app" => { "project" => IOS_PROJECT, "scheme" => "SocialVPN", "export_method" => "app-store" },
  "run_tests" => { "project" => IOS_PROJECT, "scheme" => "SocialVPN", "devices" => ["iPhone 16"] },
  "upload_to_play_store" => { "package_name" => PACKAGE, "track" => "internal" },
  "upload_to_testflight" => { "skip_waiting_for_build_processing" => true },
}.freeze

# Names (option keys, Appfile/Matchfile settings, variables, env keys) whose value is a secret
# or account detail and must come from the environment.
SENSITIVE = /password|passphrase|secret|token|private_key|key_content|key_data|json_key|api_key|
             key_id|issuer|authorization|keystore|git_url|team_id|apple_id|username/xi.freeze
# Ruby and fastlane words that are called like actions but are not ones.
NOT_ACTIONS = %w[lane_context desc puts print p raise require require_relative format private_lane].freeze

$errors = []
def fail!(msg) = $errors << msg

# --- Ripper helpers --------------------------------------------------------------------------

def node?(n, type) = n.is_a?(Array) && n[0] == type

# Every node of a tree, depth first.
def each_node(n, &blk)
  return unless n.is_a?(Array)
  yield n if n[0].is_a?(Symbol)
  n.each { |c| each_node(c, &blk) }
end

# The argument nodes of a call's argument part (arg_paren / args_add_block / nil).
def arg_list(n)
  n = n[1] if node?(n, :arg_paren)
  n = n[1] if node?(n, :args_add_block)
  n.is_a?(Array) && !n[0].is_a?(Symbol) ? n : []
end

# [name, argument nodes, line] when n is a receiver-less call (an action, lane or helper
# call): `name args`, `name(args)` or a bare `name`. (Ripper wraps every :fcall in a
# :method_add_arg, so the :fcall itself is not taken, or each call would count twice.)
def call_info(n)
  case n[0]
  when :command then [n[1][1], arg_list(n[2]), n[1][2][0]] if node?(n[1], :@ident)
  when :method_add_arg
    [n[1][1][1], arg_list(n[2]), n[1][1][2][0]] if node?(n[1], :fcall) && node?(n[1][1], :@ident)
  when :vcall then [n[1][1], [], n[1][2][0]] if node?(n[1], :@ident)
  end
end

# Keyword options of a call: {"key" => value node}.
def options(args)
  args.select { |a| node?(a, :bare_assoc_hash) }.flat_map { |h| h[1] }.to_h { |assoc| [key_name(assoc[1]), assoc[2]] }
end

def key_name(k)
  case k[0]
  when :@label then k[1].delete_suffix(":")
  when :symbol_literal then k[1][1][1]
  when :string_literal, :dyna_symbol then literal_strings(k).join
  else "?"
  end
end

def literal_strings(n)
  out = []
  each_node(n) { |x| out << x[1] if x[0] == :@tstring_content }
  out
end

# A value's Ruby meaning when it is a literal or a constant set to one; :dynamic otherwise.
def value_of(n, consts)
  case n[0]
  when :string_literal
    parts = n[1][1..]
    parts.all? { |p| node?(p, :@tstring_content) } ? parts.map { |p| p[1] }.join : :dynamic
  when :var_ref
    return true if n[1] == [:@kw, "true", n[1][2]]
    return false if n[1] == [:@kw, "false", n[1][2]]
    node?(n[1], :@const) && consts.key?(n[1][1]) ? consts[n[1][1]] : :dynamic
  when :array
    items = (n[1] || []).map { |i| node?(i, :@tstring_content) ? i[1] : value_of(i, consts) }
    items.include?(:dynamic) ? :dynamic : items
  else :dynamic
  end
end

# True when n is exactly ENV["NAME"] or ENV.fetch("NAME") (no literal fallback).
def from_env?(n)
  env = ->(r) { node?(r, :var_ref) && node?(r[1], :@const) && r[1][1] == "ENV" }
  (node?(n, :aref) && env.(n[1]) && arg_list(n[2]).size == 1) ||
    (node?(n, :method_add_arg) && node?(n[1], :call) && env.(n[1][1]) && n[1][3][1] == "fetch" &&
      arg_list(n[2]).size == 1)
end

# No literal secret anywhere in a parsed file: sensitive option keys, settings (Appfile,
# Matchfile) and variables take ENV["..."]; no private key or JSON key text at all.
def check_secrets(tree, file, settings:)
  each_node(tree) do |n|
    if n[0] == :assoc_new && key_name(n[1]) =~ SENSITIVE && !from_env?(n[2])
      fail!("#{file}: #{key_name(n[1])}: must be ENV[\"...\"], not a literal or expression")
    elsif n[0] == :assign && node?(n[1], :var_field) && n[1][1][1] =~ SENSITIVE && !from_env?(n[2])
      fail!("#{file}: #{n[1][1][1]} = ...: must be ENV[\"...\"]")
    elsif n[0] == :assign && node?(n[1], :aref_field) && literal_strings(n[1]).join =~ SENSITIVE
      fail!("#{file}: sets ENV[#{literal_strings(n[1]).join.inspect}] in the file: secrets come from outside")
    elsif settings && (info = call_info(n)) && info[0] =~ SENSITIVE && !(info[1].size == 1 && from_env?(info[1][0]))
      fail!("#{file}: #{info[0]}(...): must be ENV[\"...\"]")
    elsif n[0] == :@tstring_content && n[1] =~ /-----BEGIN [A-Z ]*PRIVATE KEY|"private_key"\s*:/
      fail!("#{file}: line #{n[2][0]} holds key material")
    end
  end
end

def parse(file)
  path = File.join(ROOT, file)
  return fail!("#{file}: missing") unless File.file?(path)
  Ripper.sexp(File.read(path), path) || fail!("#{file}: Ruby syntax error")
end

# --- the Fastfile ----------------------------------------------------------------------------

tree = parse("fastlane/Fastfile")
lanes = Hash.new { |h, k| h[k] = {} } # platform (nil outside any) => lane name => body
defs = {}
consts = {}
if tree
  check_secrets(tree, "fastlane/Fastfile", settings: false)
  each_node(tree) do |n|
    if n[0] == :def then defs[n[1][1]] = n[3]
    elsif n[0] == :assign && node?(n[1], :var_field) && node?(n[1][1], :@const)
      consts[n[1][1][1]] = value_of(n[2], {})
    end
  end
  # Top-level statements: platform blocks holding lanes, or lanes outside any platform.
  find_lanes = lambda do |stmts, platform|
    stmts.each do |s|
      next unless node?(s, :method_add_block) && (info = call_info(s[1]))
      name = info[1][0] && key_name(info[1][0]) # lane :build / platform :ios
      body = s[2][-1] # do_block / brace_block: [..., params, body]
      body = body[1] if node?(body, :bodystmt)
      if info[0] == "platform" && platform.nil? then find_lanes.(body, name)
      elsif %w[lane private_lane].include?(info[0])
        fail!("fastlane/Fastfile: lane #{platform} #{name} defined twice") if lanes[platform].key?(name)
        lanes[platform][name] = body
      end
    end
  end
  find_lanes.(tree[1], nil)
end

# The calls a lane makes, with helper methods and lane switches (same platform, then general)
# followed: [[name, options, line, argument nodes], ...] and the literal strings it holds.
def lane_calls(body, platform, lanes, defs, seen = [])
  calls = []
  strings = literal_strings(body)
  each_node(body) do |n|
    next unless (info = call_info(n))
    name, args, line = info
    target = defs[name] || lanes[platform][name] || lanes[nil][name]
    if target && !seen.include?(name)
      sub_calls, sub_strings = lane_calls(target, platform, lanes, defs, seen + [name])
      calls.concat(sub_calls)
      strings.concat(sub_strings)
    elsif !target && !NOT_ACTIONS.include?(name)
      calls << [name, options(args), line, args]
    end
  end
  [calls, strings]
end

all_actions = []
REQUIRED.each do |platform, required_lanes|
  required_lanes.each do |lane, need|
    body = lanes[platform][lane]
    next fail!("fastlane/Fastfile: no lane `#{platform} #{lane}`") unless body
    calls, strings = lane_calls(body, platform, lanes, defs)
    names = calls.map(&:first)
    puts "#{platform} #{lane}: #{names.uniq.join(' ')}" if VERBOSE
    all_actions.concat(names)
    (need[:actions] - names).each { |a| fail!("fastlane/Fastfile: lane `#{platform} #{lane}` does not call #{a}") }
    need[:strings].each do |s|
      fail!("fastlane/Fastfile: lane `#{platform} #{lane}` lacks #{s.inspect}") unless strings.any? { |x| x.include?(s) }
    end
    calls.each do |name, opts, line, args|
      where = "fastlane/Fastfile:#{line}: #{name} in `#{platform} #{lane}`"
      (EXPECTED_OPTIONS[name] || {}).each do |key, want|
        got = opts.key?(key) ? value_of(opts[key], consts) : "(not given)"
        fail!("#{where}: #{key} is #{got.inspect}, wants #{want.inspect}") unless got == want
      end
      # Actions run from the repository root; `sh` runs in fastlane/ (see the Fastfile's header).
      %w[project xcodeproj workspace project_dir output_directory].each do |key|
        v = opts.key?(key) && value_of(opts[key], consts)
        fail!("#{where}: #{key} #{v.inspect} must be relative to the repository root") if v.is_a?(String) && v.start_with?("../")
      end
      next unless name == "sh"
      literal_strings(args).each do |cmd|
        fail!("#{where}: #{cmd.inspect} runs in fastlane/, so paths need ../") if cmd =~ %r{(?<![./\w])(ios|android)/}
      end
    end
  end
end

# --- Appfile, Matchfile, Pluginfile ----------------------------------------------------------

{ "fastlane/Appfile" => ["app_identifier", "package_name"], "fastlane/Matchfile" => %w[git_url type app_identifier] }.each do |file, settings|
  next unless (t = parse(file))
  check_secrets(t, file, settings: true)
  called = []
  each_node(t) { |n| (info = call_info(n)) && called << info[0] }
  (settings - called).each { |s| fail!("#{file}: no #{s}") }
end
if (t = parse("fastlane/Matchfile"))
  ids = literal_strings(t)
  [PACKAGE, "#{PACKAGE}.tunnel"].each { |id| fail!("fastlane/Matchfile: app_identifier lacks #{id}") unless ids.include?(id) }
end
if File.file?(File.join(ROOT, "fastlane/Pluginfile")) && (t = parse("fastlane/Pluginfile"))
  check_secrets(t, "fastlane/Pluginfile", settings: false)
end

# --- the workflows ---------------------------------------------------------------------------

# Every value under `key` anywhere in a parsed YAML document.
def values_at(doc, key, out = [])
  case doc
  when Hash
    doc.each do |k, v|
      out << v if k == key
      values_at(v, key, out)
    end
  when Array then doc.each { |v| values_at(v, key, out) }
  end
  out
end

gradle_file = File.join(ROOT, "android/app/build.gradle.kts")
ndk = File.file?(gradle_file) && File.read(gradle_file)[/ndkVersion\s*=\s*"([^"]+)"/, 1]
fail!("android/app/build.gradle.kts: no ndkVersion") unless ndk
wrapper_readme = File.join(ROOT, "android/gradle/wrapper.properties.README")
wrapper_cmd = File.file?(wrapper_readme) && File.read(wrapper_readme)[/gradle wrapper --gradle-version \S+/]
fail!("android/gradle/wrapper.properties.README: no `gradle wrapper --gradle-version` command") unless wrapper_cmd

workflow_needs = {
  "android.yml" => { uses: ["reactivecircus/android-emulator-runner@"], run: ["connectedAndroidTest", wrapper_cmd, ndk] },
  "apple.yml" => { uses: [], run: ["ios/build-xcframework", "xcodegen generate", "xcodebuild test"] },
  "release.yml" => { uses: [], run: ["fastlane android internal", "fastlane ios beta", wrapper_cmd, ndk] },
}
dir = File.join(ROOT, ".github/workflows")
workflows = Dir.glob("*.{yml,yaml}", base: dir).sort
(workflow_needs.keys - workflows).each { |w| fail!(".github/workflows/#{w}: missing") }
workflows.each do |w|
  file = ".github/workflows/#{w}"
  begin
    doc = Psych.safe_load(File.read(File.join(dir, w)), filename: file)
  rescue Psych::Exception => e
    next fail!("#{file}: YAML: #{e.message}")
  end
  next fail!("#{file}: not a mapping") unless doc.is_a?(Hash)
  # YAML 1.1, which Psych follows, reads the bare key `on` as the boolean true.
  triggers = doc.key?("on") ? doc["on"] : doc[true]
  fail!("#{file}: no `on` (triggers)") if triggers.nil? || triggers == {}
  jobs = doc["jobs"]
  next fail!("#{file}: no jobs") unless jobs.is_a?(Hash) && !jobs.empty?
  jobs.each do |name, job|
    ok = job.is_a?(Hash) && (job["uses"] || (job["runs-on"] && job["steps"].is_a?(Array) && !job["steps"].empty?))
    fail!("#{file}: job #{name} needs runs-on and steps") unless ok
  end
  uses = values_at(jobs, "uses").grep(String)
  runs = (values_at(jobs, "run") + values_at(jobs, "script")).grep(String).join("\n")
  need = workflow_needs[w] || { uses: [], run: [] }
  need[:uses].each { |u| fail!("#{file}: does not use #{u}") unless uses.any? { |x| x.start_with?(u) } }
  need[:run].compact.each { |r| fail!("#{file}: does not run #{r.inspect}") unless runs.include?(r) }
  if w == "release.yml"
    tags = triggers.is_a?(Hash) && triggers["push"].is_a?(Hash) ? Array(triggers["push"]["tags"]) : []
    fail!("#{file}: not triggered by tags v*") unless tags.include?("v*")
    fail!("#{file}: no workflow_dispatch") unless triggers.is_a?(Hash) && triggers.key?("workflow_dispatch")
  end
  values_at(doc, "env").grep(Hash).each do |env|
    env.each do |k, v|
      next unless k.to_s =~ SENSITIVE && v.to_s !~ /\A\$\{\{\s*secrets\.\w+\s*\}\}\z/
      fail!("#{file}: env #{k} must be ${{ secrets.#{k} }}, not a value in the file")
    end
  end
end

if $errors.empty?
  puts "release lanes: " + REQUIRED.map { |p, l| "#{p} #{l.keys.join(' ')}" }.join("; ") +
       " (#{all_actions.uniq.size} actions); workflows: #{workflows.join(' ')} — ok"
else
  warn "check-release-lanes: #{$errors.size} problem(s):"
  $errors.uniq.each { |e| warn "  #{e}" }
  exit 1
end
