import Darwin
import Foundation
import Network
import NetworkExtension
import SocialVPNCore
import os

/// The packet tunnel: it owns the engine. Settings from the engine's `tunnelSettings()`,
/// the utun fd handed to the engine (`AfHeader` framing), path changes and wake-ups passed
/// on, and the app's messages (the control protocol's bytes) answered by the engine
/// itself. Nothing here interprets a request or a reply.
final class PacketTunnelProvider: NEPacketTunnelProvider {
    private let log = Logger(subsystem: "org.socialvpn.app.tunnel", category: "provider")
    private let queue = DispatchQueue(label: "org.socialvpn.tunnel.calls")
    private var vpn: SocialVpn?
    private var pathMonitor: NWPathMonitor?
    private var lastPath: NWPath?

    override func startTunnel(
        options: [String: NSObject]?,
        completionHandler: @escaping (Error?) -> Void
    ) {
        queue.async { [self] in
            do {
                let vpn = try startEngine()
                let settings = try TunnelNetworkSettings.make(from: vpn.tunnelSettings())
                setTunnelNetworkSettings(settings) { [self] error in
                    queue.async { [self] in
                        if let error {
                            stopEngine()
                            completionHandler(error)
                            return
                        }
                        completionHandler(attachTunnel(to: vpn))
                    }
                }
            } catch {
                log.error("the tunnel did not start: \(String(describing: error), privacy: .public)")
                completionHandler(error)
            }
        }
    }

    override func stopTunnel(
        with reason: NEProviderStopReason,
        completionHandler: @escaping () -> Void
    ) {
        log.info("stopping: reason \(reason.rawValue, privacy: .public)")
        queue.async { [self] in
            stopEngine()
            completionHandler()
        }
    }

    /// The app's request bytes → the engine's reply bytes. An `events` request may wait up
    /// to 30 s for an event: answered off the provider's queue so other messages go on.
    override func handleAppMessage(_ messageData: Data, completionHandler: ((Data?) -> Void)?) {
        guard let vpn = queue.sync(execute: { self.vpn }) else {
            completionHandler?(nil)
            return
        }
        DispatchQueue.global(qos: .userInitiated).async {
            let reply = vpn.handleControl(request: messageData)
            completionHandler?(reply)
        }
    }

    override func sleep(completionHandler: @escaping () -> Void) {
        completionHandler()
    }

    /// After sleep the NAT bindings may be gone: look for paths again (sessions stay).
    override func wake() {
        queue.async { [self] in
            try? vpn?.networkChanged()
        }
    }

    private func startEngine() throws -> SocialVpn {
        guard let proto = protocolConfiguration as? NETunnelProviderProtocol,
              let data = proto.providerConfiguration?[Shared.accountKey] as? Data
        else {
            throw SharedError.noAccount
        }
        let account = try StoredAccount.decoded(from: data)
        guard let secret = try Shared.keychain().secret(account: account.jid) else {
            throw SharedError.noSecret
        }
        let config = EngineConfig.make(
            account: account,
            secret: secret,
            stateDirectory: try Shared.stateDirectory().path
        )
        if let level = EngineConfig.logLevel(account.logLevel) {
            setLogLevel(level: level)
        }
        let vpn = try SocialVpn(config: config, listener: StateLogger(log: log), protector: nil)
        self.vpn = vpn
        return vpn
    }

    /// Finds the utun NetworkExtension opened for this tunnel and hands it to the engine.
    private func attachTunnel(to vpn: SocialVpn) -> Error? {
        // The system keeps its own descriptor of the utun: the engine gets a duplicate
        // (it closes what it is given, on success, when it is done).
        guard let tunnel = findTunnelFd() else {
            stopEngine()
            return NEVPNError(.configurationInvalid)
        }
        let fd = dup(tunnel.fd)
        guard fd >= 0 else {
            stopEngine()
            return NEVPNError(.configurationInvalid)
        }
        do {
            try vpn.startTunnel(fd: fd, framing: .afHeader)
        } catch {
            close(fd)
            stopEngine()
            return error
        }
        watchPaths(vpn)
        return nil
    }

    /// Wi-Fi ↔ cellular and new addresses: the engine looks for new paths and keeps its
    /// sessions. Only real changes are passed on (the monitor also reports the first path).
    private func watchPaths(_ vpn: SocialVpn) {
        let monitor = NWPathMonitor()
        monitor.pathUpdateHandler = { [weak self] path in
            guard let self else { return }
            self.queue.async {
                defer { self.lastPath = path }
                guard let last = self.lastPath, last != path, path.status == .satisfied else { return }
                try? vpn.networkChanged()
            }
        }
        monitor.start(queue: queue)
        pathMonitor = monitor
    }

    private func stopEngine() {
        pathMonitor?.cancel()
        pathMonitor = nil
        lastPath = nil
        if let vpn {
            try? vpn.stop()
        }
        vpn = nil
    }
}

/// The engine's listener in the extension: the app hears events through its `events`
/// requests, so this only logs the account's state (no personal data).
final class StateLogger: VpnEventListener {
    private let log: Logger

    init(log: Logger) {
        self.log = log
    }

    func onState(state: VpnState) throws {
        log.info("xmpp: \(describeState(state: state), privacy: .private)")
    }

    func onRosterChanged() throws {}

    func onFriendRequest(jid: String) throws {}

    func onLink(link: LinkEvent) throws {}

    func onTunnelLost(reason: String) throws {
        log.error("the tunnel was lost: \(reason, privacy: .public)")
    }
}
