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
    private var handedOverAgain = false

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
                stopEngine()
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
        let vpn = try SocialVpn(config: config, listener: EngineListener(provider: self, log: log), protector: nil)
        self.vpn = vpn
        return vpn
    }

    /// The engine lost the utun (reads failed): hand it over once more; if that fails too,
    /// end the tunnel with the reason, so iOS shows it off (and on-demand may start a new
    /// one) instead of a connected VPN that carries nothing.
    fileprivate func tunnelLost(_ reason: String) {
        queue.async { [self] in
            guard let vpn else { return }
            // Once per engine: a utun that keeps failing is not handed over in a loop.
            if !handedOverAgain, handOverTunnel(to: vpn) == nil {
                handedOverAgain = true
                log.info("the tunnel was handed over again")
                return
            }
            log.error("the tunnel is lost: \(reason, privacy: .public)")
            stopEngine()
            cancelTunnelWithError(NEVPNError(.connectionFailed))
        }
    }

    /// The engine ended on an error of its own (its UDP socket failed).
    fileprivate func engineStopped(_ error: String) {
        queue.async { [self] in
            log.error("the engine stopped: \(error, privacy: .public)")
            stopEngine()
            cancelTunnelWithError(NEVPNError(.connectionFailed))
        }
    }

    /// Finds the utun NetworkExtension opened for this tunnel and hands it to the engine.
    private func attachTunnel(to vpn: SocialVpn) -> Error? {
        if let error = handOverTunnel(to: vpn) {
            stopEngine()
            return error
        }
        watchPaths(vpn)
        return nil
    }

    private func handOverTunnel(to vpn: SocialVpn) -> Error? {
        // The system keeps its own descriptor of the utun: the engine gets a duplicate
        // (it closes what it is given, on success, when it is done).
        guard let tunnel = findTunnelFd() else {
            return NEVPNError(.configurationInvalid)
        }
        let fd = dup(tunnel.fd)
        guard fd >= 0 else {
            return NEVPNError(.configurationInvalid)
        }
        do {
            try vpn.startTunnel(fd: fd, framing: .afHeader)
        } catch {
            close(fd)
            return error
        }
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
        handedOverAgain = false
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
/// requests, so this logs the account's state (no personal data) and acts only on what
/// ends the tunnel's use: a lost utun, an engine that stopped on an error.
final class EngineListener: VpnEventListener, @unchecked Sendable {
    private weak var provider: PacketTunnelProvider?
    private let log: Logger

    init(provider: PacketTunnelProvider, log: Logger) {
        self.provider = provider
        self.log = log
    }

    func onState(state: VpnState) throws {
        log.info("xmpp: \(describeState(state: state), privacy: .private)")
        if case let .stopped(error?) = state {
            provider?.engineStopped(error)
        }
    }

    func onRosterChanged() throws {}

    func onFriendRequest(jid: String) throws {}

    func onLink(link: LinkEvent) throws {}

    func onTunnelLost(reason: String) throws {
        provider?.tunnelLost(reason)
    }
}
