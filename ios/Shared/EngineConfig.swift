import Foundation
import SocialVPNCore

/// The engine's configuration from the stored account and its secret (the core checks
/// every field and names the wrong one).
enum EngineConfig {
    /// As on Android: at most 16 links; on demand, idle links close after 5 minutes.
    static let maxLinks: UInt32 = 16
    static let onDemandIdleSecs: UInt64 = 300

    static func make(account: StoredAccount, secret: String, stateDirectory: String) -> VpnConfig {
        let server = account.server.trimmingCharacters(in: .whitespaces)
        return VpnConfig(
            stateDir: stateDirectory,
            jid: account.jid,
            signIn: account.usesToken ? .token(token: secret) : .password(password: secret),
            resource: "",
            server: server.isEmpty ? nil : server,
            dnsServers: [],
            caFile: nil,
            iceServers: [],
            subnet: account.subnet.trimmingCharacters(in: .whitespaces),
            listenPort: 0,
            linkPolicy: account.onDemandLinks
                ? .onDemand(maxLinks: maxLinks, idleSecs: onDemandIdleSecs)
                : .proactive(maxLinks: maxLinks)
        )
    }

    static func logLevel(_ name: String) -> LogLevel? {
        switch name.lowercased() {
        case "off": return .off
        case "error": return .error
        case "warn": return .warn
        case "info": return .info
        case "debug": return .debug
        case "trace": return .trace
        default: return nil
        }
    }
}
