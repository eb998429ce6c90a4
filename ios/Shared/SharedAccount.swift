import Foundation

/// What the app and its tunnel extension share: names of the App Group and the Keychain
/// access group, and the account the user signed in with (the secret is in the Keychain,
/// never in here). The app writes the account into the VPN configuration's
/// `providerConfiguration`; the extension reads it from there when the system starts it
/// (also on demand, with the app not running).
enum Shared {
    static let appGroup = "group.org.socialvpn.app"
    static let keychainService = "org.socialvpn.app.secret"
    static let tunnelBundleId = "org.socialvpn.app.tunnel"
    static let accountKey = "account"

    /// The Keychain both targets use: the access group carries the team prefix, which only
    /// the build knows (Info.plist's `SocialVPNKeychainGroup` is
    /// `$(AppIdentifierPrefix)org.socialvpn.app` in both targets).
    static func keychain() -> Keychain {
        let group = Bundle.main.object(forInfoDictionaryKey: "SocialVPNKeychainGroup") as? String
        return Keychain(accessGroup: group)
    }

    /// The engine's state directory (device key, friends' addresses, toggles) in the App
    /// Group container: it outlives the extension's process and is backed up with the app.
    static func stateDirectory() throws -> URL {
        guard let container = FileManager.default.containerURL(
            forSecurityApplicationGroupIdentifier: appGroup
        ) else {
            throw SharedError.noAppGroup
        }
        let dir = container.appendingPathComponent("engine", isDirectory: true)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }
}

enum SharedError: Error {
    case noAppGroup
    case noAccount
    case noSecret
}

/// The account as the sign-in screen and settings left it.
struct StoredAccount: Codable, Equatable {
    var jid: String
    /// The secret in the Keychain is an OAuth token (browser sign-in), not a password.
    var usesToken: Bool
    /// `host:port` when the server cannot be found from the domain (empty: DNS SRV).
    var server: String = ""
    var subnet: String = "100.64.0.0/16"
    var onDemandLinks: Bool = false
    var logLevel: String = "warn"

    func encoded() throws -> Data {
        try JSONEncoder().encode(self)
    }

    static func decoded(from data: Data) throws -> StoredAccount {
        try JSONDecoder().decode(StoredAccount.self, from: data)
    }
}
