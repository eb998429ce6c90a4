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
        /// Reading the VPN configuration at launch.
        case loading
        case signedOut
        case signedIn
    }

    private(set) var phase: Phase = .loading
    /// The account signed in, or the last one (the sign-in form starts from it).
    private(set) var account: StoredAccount?
    private(set) var vpnStatus: NEVPNStatus = .invalid
    /// The user switched the VPN and the system has not answered yet.
    private(set) var switching = false
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
    /// Which long poll is the current one: a cancelled one may still return (its request
    /// cannot be cancelled) and must not apply what it read.
    private var followGeneration = 0
    private var visible = false
    private var statusObserver: NSObjectProtocol?

    var vpnOn: Bool {
        vpnStatus == .connected || vpnStatus == .connecting || vpnStatus == .reasserting
    }

    var requests: [Friend] { friends.filter { $0.pendingIn && !$0.own } }
    /// Friends and the people asked, online or not.
    var contacts: [Friend] { friends.filter { !$0.pendingIn && !$0.own } }
    /// The user's own other devices.
    var ownDevices: [Device] { friends.filter { $0.own }.flatMap { $0.devices } }

    /// At launch: a configuration from an earlier sign-in means signed in.
    func load() async {
        do {
            if let manager = try await tunnel.load(),
               let proto = manager.protocolConfiguration as? NETunnelProviderProtocol,
               let data = proto.providerConfiguration?[Shared.accountKey] as? Data {
                let account = try StoredAccount.decoded(from: data)
                self.account = account
                if try keychain.secret(account: account.jid) != nil {
                    phase = .signedIn
                    attach(manager)
                    return
                }
            }
        } catch {
            problem = "The VPN configuration cannot be read: \(error.localizedDescription)"
        }
        phase = .signedOut
    }

    /// Password or token: kept in the Keychain for the extension, which signs in. A wrong
    /// password comes back as the `auth_failed` state and ends in the sign-in form again.
    func signIn(account: StoredAccount, secret: String) async {
        busy = true
        defer { busy = false }
        problem = nil
        do {
            try keychain.save(secret: secret, account: account.jid)
            let manager = try await tunnel.save(account: account, connectOnDemand: true)
            self.account = account
            phase = .signedIn
            attach(manager)
            switching = true
            try tunnel.start()
        } catch {
            switching = false
            problem = "SocialVPN could not be set up: \(error.localizedDescription)"
        }
    }

    func setVpn(on: Bool) async {
        switching = true
        do {
            if on {
                if let account {
                    attach(try await tunnel.save(account: account, connectOnDemand: true))
                }
                try tunnel.start()
            } else {
                try await tunnel.stop()
            }
        } catch {
            switching = false
            problem = "The VPN could not be switched: \(error.localizedDescription)"
        }
    }

    /// Settings live with the account in the VPN configuration; the engine reads them when
    /// the VPN next starts (the log level also changes at once). On-demand stays as it is.
    func saveSettings(onDemandLinks: Bool, logLevel: String) async {
        guard var account, account.onDemandLinks != onDemandLinks || account.logLevel != logLevel else { return }
        account.onDemandLinks = onDemandLinks
        account.logLevel = logLevel
        do {
            attach(try await tunnel.save(account: account, connectOnDemand: nil))
            self.account = account
            if let client, let level = EngineConfig.logLevel(logLevel) {
                _ = try? await client.request(.setLogLevel(level: level))
            }
        } catch {
            problem = "The settings could not be saved: \(error.localizedDescription)"
        }
    }

    /// Tells friends the links are closing, forgets the secret and removes the VPN
    /// configuration; the account stays only to fill in the sign-in form.
    func signOut() async {
        problem = nil
        if let client {
            _ = try? await client.request(.signOut)
        }
        if let jid = account?.jid {
            try? keychain.delete(account: jid)
        }
        do {
            try await tunnel.remove()
        } catch {
            // Without its secret the extension cannot sign in; still say what happened.
            problem = "The VPN configuration could not be removed: \(error.localizedDescription)"
        }
        detach()
        phase = .signedOut
    }

    /// A friend action from a row; its error shows under the list.
    func perform(_ request: ControlRequest) async {
        guard let client, vpnStatus == .connected else {
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

    /// The scene became visible or went to the background: the engine holds screen-only
    /// events meanwhile and the XMPP server is told (XEP-0352); the long poll runs only
    /// while visible.
    func setVisible(_ visible: Bool) {
        guard visible != self.visible else { return }
        self.visible = visible
        if let client, vpnStatus == .connected {
            Task { _ = try? await client.request(.setForeground(foreground: visible)) }
        }
        if visible {
            follow()
        } else {
            stopFollowing()
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
                self?.statusChanged(manager.connection.status)
            }
        }
        follow()
    }

    private func detach() {
        stopFollowing()
        if let statusObserver {
            NotificationCenter.default.removeObserver(statusObserver)
        }
        statusObserver = nil
        client = nil
        friends = []
        status = nil
        stateText = "Off"
        vpnStatus = .invalid
        switching = false
    }

    private func statusChanged(_ now: NEVPNStatus) {
        let was = vpnStatus
        vpnStatus = now
        if now == .connected || now == .disconnected || now == .invalid {
            switching = false
        }
        switch now {
        case .connected:
            follow()
        case .disconnected:
            stopFollowing()
            stateText = "Off"
            // The extension failed to start or stopped on an error: say why.
            if was == .connecting || was == .connected || was == .reasserting {
                Task {
                    if let error = await tunnel.lastDisconnectError() {
                        problem = "The VPN stopped: \(error.localizedDescription)"
                    }
                }
            }
        default:
            break
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

    /// One long poll at a time, only while visible and connected. It ends when the app
    /// hides, the tunnel stops, or the extension fails five times in a row (the next
    /// `connected` or the next time the app is shown starts it again).
    private func follow() {
        stopFollowing()
        guard let client, visible, vpnStatus == .connected else { return }
        let generation = followGeneration
        following = Task { [weak self] in
            await self?.refresh()
            var failures = 0
            while failures < 5 {
                guard let self, !Task.isCancelled, generation == self.followGeneration else { return }
                do {
                    let (events, next) = try await client.events(after: self.cursor, waitMs: 25_000)
                    guard !Task.isCancelled, generation == self.followGeneration else { return }
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

    private func stopFollowing() {
        followGeneration += 1
        following?.cancel()
        following = nil
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

    /// A refused password or token: forget it, switch the VPN off (keeping its
    /// configuration, so signing in again asks iOS nothing) and show the form with the
    /// reason, filled in with the account.
    private func failedSignIn() async {
        let reason = stateText
        if let jid = account?.jid {
            try? keychain.delete(account: jid)
        }
        try? await tunnel.stop()
        detach()
        phase = .signedOut
        problem = reason
    }
}
