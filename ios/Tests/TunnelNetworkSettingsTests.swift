import NetworkExtension
@testable import SocialVPN
import SocialVPNCore
import XCTest

/// The interface the extension asks iOS for, from the engine's `tunnelSettings()`.
final class TunnelNetworkSettingsTests: XCTestCase {
    private let settings = TunnelSettings(
        ipv4: "100.64.0.5",
        ipv4Prefix: 16,
        ipv4Route: "100.64.0.0/16",
        ipv6: "fd53:5650:0:1::5",
        ipv6Prefix: 64,
        mtu: 1360
    )

    func testAddressRoutesAndMtuComeFromTheEngine() throws {
        let network = try TunnelNetworkSettings.make(from: settings)
        let ipv4 = try XCTUnwrap(network.ipv4Settings)
        XCTAssertEqual(ipv4.addresses, ["100.64.0.5"])
        XCTAssertEqual(ipv4.subnetMasks, ["255.255.0.0"])
        let route = try XCTUnwrap(ipv4.includedRoutes?.first)
        XCTAssertEqual(route.destinationAddress, "100.64.0.0")
        XCTAssertEqual(route.destinationSubnetMask, "255.255.0.0")
        XCTAssertEqual(ipv4.includedRoutes?.count, 1, "only the user's subnet goes into the tunnel")
        let ipv6 = try XCTUnwrap(network.ipv6Settings)
        XCTAssertEqual(ipv6.addresses, ["fd53:5650:0:1::5"])
        XCTAssertEqual(ipv6.networkPrefixLengths, [64])
        XCTAssertEqual(network.mtu, 1360)
        XCTAssertNil(network.dnsSettings, "the phone's own DNS is left alone")
    }

    func testMasksAndBadRoutes() {
        XCTAssertEqual(TunnelNetworkSettings.mask(prefix: 10), "255.192.0.0")
        XCTAssertEqual(TunnelNetworkSettings.mask(prefix: 32), "255.255.255.255")
        XCTAssertEqual(TunnelNetworkSettings.mask(prefix: 0), "0.0.0.0")
        XCTAssertThrowsError(try TunnelNetworkSettings.ipv4Route("100.64.0.0"))
        XCTAssertThrowsError(try TunnelNetworkSettings.ipv4Route("100.64.0.0/40"))
    }
}
