import Foundation
import NetworkExtension
import Observation
import SocialVPNCore

/// Everything the screens show, kept on the main actor. The engine runs in the tunnel
/// extension: this model sends it the core's requests and follows its events with a long
/// poll (`events` waits up to 25 s in the extension), only while a screen is visible.
@MainActor
@Observable
final class AppModel {
    enum Phase: Equatable {
        case signedOut
        case signedIn
    }

    private(set) var phase: Phase = .signedOut
    private(set) var account: StoredAccount?
    private(set) var vpnStatus: NEVPNStatus = .invalid
    /// The account's connection, in words.
    private(set) var stateText = "Off"
    private(set) var status: Status?
    private(set) var friends: [Friend] = []
    /// What went wrong last, in words (shown until the next action).
    var problem: String?
    var busy = false

    private let tunnel = TunnelManager()
    private let keychain = Shared.keychain()
    private var client: TunnelClient?
    private var cursor: UInt64 = 0
    private var following: Task<Void, Never>?
    private var visible = false
    private var statusObserver: NSObjectProtocol?

    var vpnOn: Bool {
        vpnStatus == .connected || vpnStatus == .connecting || vpnStatus == .reasserting
    }

    var requests: [Friend] { friends.filter { $0.pendingIn } }
    var onSocialVpn: [Friend] { friends.filter { !$0.pendingIn && $0.devices.contains { $0.socialvpn } } }
    var others: [Friend] { friends.filter { !$0.pendingIn && !$0.devices.contains { $0.socialvpn } } }

    /// At launch: a configuration from an earlier sign-in means signed in.
    func load() async {
        do {
            if let manager = try await tunnel.load(),
               let proto = manager.protocolConfiguration as? NETunnelProviderProtocol,
               let data = proto.providerConfiguration?[Shared.accountKey] as? Data {
                account = try StoredAccount.decoded(from: data)
                phase = .signedIn
                attach(manager)
            }
        } catch {
            problem = "The VPN configuration cannot be read: \(error.localizedDescription)"
        }
    }

    /// Password or token: kept in the Keychain for the extension, which signs in. A wrong
    /// password comes back as the `auth_failed` state and ends in the sign-in form again.
    func signIn(account: StoredAccount, secret: String) async {
        busy = true
        defer { busy = false }
        do {
            try keychain.save(secret: secret, account: account.jid)
            let manager = try await tunnel.save(account: account)
            self.account = account
            phase = .signedIn
            attach(manager)
            try tunnel.start()
        } catch {
            problem = "SocialVPN could not be set up: \(error.localizedDescription)"
        }
    }

    func setVpn(on: Bool) async {
        do {
            if on {
                if let account {
                    attach(try await tunnel.save(account: account))
                }
                try tunnel.start()
            } else {
                try await tunnel.stop()
            }
        } catch {
            problem = "The VPN could not be switched: \(error.localizedDescription)"
        }
    }

    /// Settings live with the account in the VPN configuration; the engine reads them when
    /// the VPN next starts (the log level also changes at once).
    func saveSettings(onDemandLinks: Bool, logLevel: String) async {
        guard var account, account.onDemandLinks != onDemandLinks || account.logLevel != logLevel else { return }
        account.onDemandLinks = onDemandLinks
        account.logLevel = logLevel
        do {
            attach(try await tunnel.save(account: account))
            self.account = account
            if let client, let level = EngineConfig.logLevel(logLevel) {
                _ = try? await client.request(.setLogLevel(level: level))
            }
        } catch {
            problem = "The settings could not be saved: \(error.localizedDescription)"
        }
    }

    func signOut() async {
        if client != nil {
            _ = try? await client?.request(.signOut)
        }
        if let jid = account?.jid {
            try? keychain.delete(account: jid)
        }
        try? await tunnel.remove()
        following?.cancel()
        client = nil
        account = nil
        friends = []
        status = nil
        stateText = "Off"
        phase = .signedOut
    }

    /// A friend action from a row; its error shows under the list.
    func perform(_ request: ControlRequest) async {
        guard let client else {
            problem = "Switch the VPN on first."
            return
        }
        do {
            _ = try await client.request(request)
            problem = nil
            await refresh()
        } catch let error as VpnError {
            problem = describeError(error: error)
        } catch {
            problem = "The VPN is not running."
        }
    }

    /// The scene became visible or hidden: the engine holds screen-only events meanwhile
    /// and the XMPP server is told (XEP-0352); the long poll runs only while visible.
    func setVisible(_ visible: Bool) {
        self.visible = visible
        guard let client else { return }
        Task { _ = try? await client.request(.setForeground(foreground: visible)) }
        if visible {
            follow()
        } else {
            following?.cancel()
        }
    }

    private func attach(_ manager: NETunnelProviderManager) {
        client = TunnelClient(transport: ProviderTransport(manager: manager))
        vpnStatus = manager.connection.status
        if let statusObserver {
            NotificationCenter.default.removeObserver(statusObserver)
        }
        statusObserver = NotificationCenter.default.addObserver(
            forName: .NEVPNStatusDidChange, object: manager.connection, queue: .main
        ) { [weak self] _ in
            MainActor.assumeIsolated {
                guard let self else { return }
                self.vpnStatus = manager.connection.status
                if self.vpnStatus == .connected && self.visible {
                    self.follow()
                }
            }
        }
        if visible {
            follow()
        }
    }

    private func refresh() async {
        guard let client else { return }
        if let status = try? await client.status() {
            self.status = status
        }
        if let friends = try? await client.roster() {
            self.friends = friends
        }
    }

    /// One long poll at a time; it ends when the extension stops or the app hides.
    private func follow() {
        following?.cancel()
        guard let client, vpnStatus == .connected else { return }
        following = Task { [weak self] in
            await self?.refresh()
            var failures = 0
            while !Task.isCancelled, failures < 5 {
                guard let self else { return }
                do {
                    let (events, next) = try await client.events(after: self.cursor, waitMs: 25_000)
                    failures = 0
                    self.cursor = next
                    await self.apply(events)
                } catch {
                    // The extension went away or is restarting: a short, bounded back-off.
                    failures += 1
                    try? await Task.sleep(for: .seconds(failures))
                }
            }
        }
    }

    private func apply(_ events: [ControlEvent]) async {
        var changed = false
        for event in events {
            switch event {
            case let .state(state):
                stateText = describeState(state: state)
                if case .authFailed = state { await failedSignIn() }
                if case .tokenRejected = state { await failedSignIn() }
            case .rosterChanged, .friendRequest, .link, .missed:
                changed = true
            case let .tunnelLost(reason):
                problem = "The VPN interface was lost: \(reason)"
            case .unknown:
                break
            }
        }
        if changed {
            await refresh()
        }
    }

    /// A refused password or token: forget it and show the form with the reason.
    private func failedSignIn() async {
        let reason = stateText
        await signOut()
        problem = reason
    }
}
