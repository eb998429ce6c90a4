import Foundation
import NetworkExtension

/// The VPN configuration in the system's settings: created on first sign-in, holding the
/// account (not the secret) for the extension, with an on-demand rule that connects on
/// any network, so the VPN comes back after a reboot or a network change by itself.
@MainActor
final class TunnelManager {
    private(set) var manager: NETunnelProviderManager?

    /// The app's configuration, if the user has signed in before.
    func load() async throws -> NETunnelProviderManager? {
        let all = try await NETunnelProviderManager.loadAllFromPreferences()
        manager = all.first { ($0.protocolConfiguration as? NETunnelProviderProtocol)?.providerBundleIdentifier == Shared.tunnelBundleId }
        return manager
    }

    /// Saves the account into the configuration (creating it: iOS asks the user once).
    /// `connectOnDemand` switches on-demand on or off; nil keeps what the user chose last.
    func save(account: StoredAccount, connectOnDemand: Bool?) async throws -> NETunnelProviderManager {
        let manager = try await load() ?? NETunnelProviderManager()
        let proto = NETunnelProviderProtocol()
        proto.providerBundleIdentifier = Shared.tunnelBundleId
        proto.serverAddress = account.jid
        proto.providerConfiguration = [Shared.accountKey: try account.encoded()]
        manager.protocolConfiguration = proto
        manager.localizedDescription = "SocialVPN"
        manager.onDemandRules = [NEOnDemandRuleConnect()]
        if let connectOnDemand {
            manager.isOnDemandEnabled = connectOnDemand
        }
        manager.isEnabled = true
        try await manager.saveToPreferences()
        // A saved configuration must be loaded again before it can be started.
        try await manager.loadFromPreferences()
        self.manager = manager
        return manager
    }

    func start() throws {
        try manager?.connection.startVPNTunnel()
    }

    /// Off until the user switches it on again (on-demand would reconnect at once). The
    /// tunnel stops even when the configuration cannot be saved (another app changed it).
    func stop() async throws {
        guard let manager else { return }
        defer { manager.connection.stopVPNTunnel() }
        try await manager.loadFromPreferences()
        manager.isOnDemandEnabled = false
        try await manager.saveToPreferences()
    }

    /// Why the tunnel last ended, if it failed (the extension's error, in its words).
    func lastDisconnectError() async -> Error? {
        guard let manager else { return nil }
        do {
            try await manager.connection.fetchLastDisconnectError()
            return nil
        } catch {
            return error
        }
    }

    /// Signing out: the configuration goes (and with it on-demand).
    func remove() async throws {
        guard let manager else { return }
        manager.connection.stopVPNTunnel()
        try await manager.removeFromPreferences()
        self.manager = nil
    }

    var status: NEVPNStatus {
        manager?.connection.status ?? .invalid
    }
}
