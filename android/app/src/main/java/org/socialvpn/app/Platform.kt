package org.socialvpn.app

import android.content.Context
import android.net.ConnectivityManager

/**
 * What the app takes from the phone, in one place so the JVM tests can stand in for the parts
 * Robolectric does not have (the Keystore, a tun from `establish()`).
 */
object Platform {
    /** Seals the stored secret (tests: a software AES key; Robolectric has no Keystore). */
    @Volatile var secretBox: () -> SecretBox = { KeystoreSecretBox() }

    /** The current network's DNS servers, which the engine resolves SRV and host names with. */
    @Volatile var dnsServers: (Context) -> List<String> = { context ->
        val cm = context.getSystemService(ConnectivityManager::class.java)
        val network = cm?.activeNetwork
        cm?.getLinkProperties(network)?.dnsServers?.mapNotNull { it.hostAddress } ?: emptyList()
    }

    /** Opens the tunnel for the service (tests: a Linux TUN). */
    @Volatile var tunnelOpener: (SocialVpnService) -> TunnelOpener = { VpnBuilderOpener(it) }
}
