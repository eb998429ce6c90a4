@testable import SocialVPN
import SocialVPNCore
import XCTest

/// The app's requests through the extension's forwarding to a real engine: the transport
/// here does what PacketTunnelProvider.handleAppMessage does (bytes in, engine's bytes out).
final class MessageForwardingTests: XCTestCase {
    private struct Forwarding: MessageTransport {
        let vpn: SocialVpn
        func send(_ message: Data) async throws -> Data? {
            await Task.detached { vpn.handleControl(request: message) }.value
        }
    }

    private struct Stopped: MessageTransport {
        func send(_ message: Data) async throws -> Data? { nil }
    }

    private final class Quiet: VpnEventListener {
        func onState(state: VpnState) throws {}
        func onRosterChanged() throws {}
        func onFriendRequest(jid: String) throws {}
        func onLink(link: LinkEvent) throws {}
        func onTunnelLost(reason: String) throws {}
    }

    private var stateDir: URL!
    private var vpn: SocialVpn!

    override func setUpWithError() throws {
        stateDir = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString)
        try FileManager.default.createDirectory(at: stateDir, withIntermediateDirectories: true)
        // A server that refuses at once: the engine runs, offline, and answers requests.
        let account = StoredAccount(jid: "alice@example.invalid", usesToken: false, server: "127.0.0.1:1")
        let config = EngineConfig.make(account: account, secret: "pw", stateDirectory: stateDir.path)
        vpn = try SocialVpn(config: config, listener: Quiet(), protector: nil)
    }

    override func tearDownWithError() throws {
        try vpn?.stop()
        try? FileManager.default.removeItem(at: stateDir)
    }

    func testStatusRosterAndEventsThroughTheBytes() async throws {
        let client = TunnelClient(transport: Forwarding(vpn: vpn))
        let reply = try await client.status()
        let status = try XCTUnwrap(reply)
        XCTAssertEqual(status.uid, vpn.deviceId())
        XCTAssertEqual(status.ipv4, vpn.tunnelSettings().ipv4)
        let friends = try await client.roster()
        XCTAssertTrue(friends.allSatisfy { !$0.pendingIn })
        // The first events: the account connecting, then offline (the server refused).
        var cursor: UInt64 = 0
        var states: [VpnState] = []
        for _ in 0..<10 where !states.contains(where: { if case .offline = $0 { return true } else { return false } }) {
            let (events, next) = try await client.events(after: cursor, waitMs: 5_000)
            cursor = next
            for case let .state(state) in events { states.append(state) }
        }
        XCTAssertEqual(states.first, .connecting)
        XCTAssertTrue(states.contains { if case .offline = $0 { return true } else { return false } })
    }

    func testErrorsComeBackTyped() async throws {
        let client = TunnelClient(transport: Forwarding(vpn: vpn))
        do {
            _ = try await client.request(.pinAddress(device: "00", address: "100.64.0.9"))
            XCTFail("an unknown device cannot be pinned")
        } catch {
            // The app's TunnelClient threw it: the app links its own copy of the bindings, so
            // a cast to this bundle's `VpnError` would not match; its case name does.
            XCTAssertTrue(String(describing: error).hasPrefix("refused"), "\(error)")
        }
        do {
            _ = try await TunnelClient(transport: Stopped()).request(.status)
            XCTFail("no extension, no reply")
        } catch TunnelClient.Failure.notRunning {}
    }
}
