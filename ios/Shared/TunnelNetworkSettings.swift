import Foundation
import NetworkExtension
import SocialVPNCore

/// The interface the engine expects, from its `tunnelSettings()`: my address with the
/// user's subnet, the subnet (and the ULA /64 of IPv6) routed into the tunnel, nothing
/// else (the rest of the phone's traffic keeps its path), the MTU.
enum TunnelNetworkSettings {
    enum Failure: Error, Equatable {
        case badRoute(String)
    }

    static func make(from settings: TunnelSettings) throws -> NEPacketTunnelNetworkSettings {
        // The "remote" is only a label here: links go to many friends, not one server.
        let network = NEPacketTunnelNetworkSettings(tunnelRemoteAddress: "127.0.0.1")
        let route = try ipv4Route(settings.ipv4Route)
        let ipv4 = NEIPv4Settings(
            addresses: [settings.ipv4],
            subnetMasks: [mask(prefix: settings.ipv4Prefix)]
        )
        ipv4.includedRoutes = [NEIPv4Route(destinationAddress: route.address, subnetMask: route.mask)]
        network.ipv4Settings = ipv4
        let ipv6 = NEIPv6Settings(
            addresses: [settings.ipv6],
            networkPrefixLengths: [NSNumber(value: settings.ipv6Prefix)]
        )
        ipv6.includedRoutes = [
            NEIPv6Route(
                destinationAddress: settings.ipv6,
                networkPrefixLength: NSNumber(value: settings.ipv6Prefix)
            ),
        ]
        network.ipv6Settings = ipv6
        network.mtu = NSNumber(value: settings.mtu)
        return network
    }

    /// `100.64.0.0/16` → its address and dotted mask.
    static func ipv4Route(_ cidr: String) throws -> (address: String, mask: String) {
        let parts = cidr.split(separator: "/")
        guard parts.count == 2, let prefix = UInt8(parts[1]), prefix <= 32 else {
            throw Failure.badRoute(cidr)
        }
        return (String(parts[0]), mask(prefix: prefix))
    }

    static func mask(prefix: UInt8) -> String {
        let bits: UInt32 = prefix == 0 ? 0 : UInt32.max << (32 - UInt32(min(prefix, 32)))
        return [24, 16, 8, 0].map { String((bits >> UInt32($0)) & 0xff) }.joined(separator: ".")
    }
}
