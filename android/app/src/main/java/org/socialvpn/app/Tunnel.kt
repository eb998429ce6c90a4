package org.socialvpn.app

import android.app.PendingIntent
import android.content.Intent
import android.net.VpnService
import android.os.Build
import org.socialvpn.core.TunnelSettings
import java.net.InetAddress

/** Makes the platform's tunnel for the engine. */
fun interface TunnelOpener {
    /** A detached fd the engine takes over (raw IP packets), or null when Android refused. */
    fun open(settings: TunnelSettings): Int?
}

/** The real one: `VpnService.Builder` from the engine's [TunnelSettings]. */
class VpnBuilderOpener(private val service: SocialVpnService) : TunnelOpener {
    override fun open(settings: TunnelSettings): Int? =
        configure(service.Builder(), settings).establish()?.detachFd()

    /**
     * The interface: my overlay address in my subnet, the subnet routed into the tunnel (only
     * friends' addresses: the phone's other traffic never enters it), the device's ULA /64,
     * the engine's MTU. The app's own sockets stay outside, so the engine's UDP and XMPP
     * traffic can never loop into its own tunnel, even sockets opened before the VPN came up.
     */
    fun configure(builder: VpnService.Builder, settings: TunnelSettings): VpnService.Builder {
        val v4 = InetAddress.getByName(settings.ipv4)
        val (route, routeBits) = settings.ipv4Route.split('/').let { InetAddress.getByName(it[0]) to it[1].toInt() }
        val v6 = InetAddress.getByName(settings.ipv6)
        val v6Bits = settings.ipv6Prefix.toInt()
        builder.setSession("SocialVPN")
            // The InetAddress overloads: the String ones need libcore, absent on the JVM.
            .addAddress(v4, settings.ipv4Prefix.toInt())
            .addRoute(route, routeBits)
            .addAddress(v6, v6Bits)
            .addRoute(network(v6, v6Bits), v6Bits)
            .setMtu(settings.mtu.toInt())
            .addDisallowedApplication(service.packageName)
            .setConfigureIntent(
                PendingIntent.getActivity(
                    service, 0, Intent(service, MainActivity::class.java),
                    PendingIntent.FLAG_IMMUTABLE or PendingIntent.FLAG_UPDATE_CURRENT,
                ),
            )
        // Friends' traffic is not metered by us: leave the underlying network's say.
        if (Build.VERSION.SDK_INT >= 29) builder.setMetered(false)
        return builder
    }

    private fun network(address: InetAddress, bits: Int): InetAddress {
        val bytes = address.address
        for (i in bytes.indices) {
            val keep = (bits - i * 8).coerceIn(0, 8)
            bytes[i] = (bytes[i].toInt() and (0xff shl (8 - keep))).toByte()
        }
        return InetAddress.getByAddress(bytes)
    }
}
