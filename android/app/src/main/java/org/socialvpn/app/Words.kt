package org.socialvpn.app

import org.socialvpn.core.Device
import org.socialvpn.core.LinkState
import org.socialvpn.core.SignInException
import org.socialvpn.core.VpnException
import org.socialvpn.core.VpnState
import org.socialvpn.core.describeError
import org.socialvpn.core.describeLink
import org.socialvpn.core.describeSignInError
import org.socialvpn.core.describeState
import java.util.Locale

/**
 * What the app says about the engine's state and failures, in words a user can act on: the
 * sentences are the core's (`bindings/src/words.rs`), so the iOS app says exactly the same;
 * how a device's line and byte counts are laid out is this app's.
 */
object Words {
    fun state(state: VpnState): String = describeState(state)

    fun error(error: VpnException): String = describeError(error)

    fun signIn(error: SignInException): String = describeSignInError(error)

    /** A device's link, as its row says it. */
    fun link(link: LinkState): String = describeLink(link)

    /** Two lines per online device: where it is in my network, then its link and traffic. */
    fun device(device: Device, friendEnabled: Boolean = true): String = buildString {
        append(device.resource).append(" — ").append(device.overlayAddress ?: "no address yet")
        if (device.pinned) append(" (pinned)")
        append('\n').append(if (friendEnabled || device.link.isUp()) link(device.link) else "Switched off")
        if (device.txBytes + device.rxBytes > 0uL) {
            append(" · ↑").append(bytes(device.txBytes)).append(" ↓").append(bytes(device.rxBytes))
        }
    }

    fun bytes(count: ULong): String {
        val n = count.toDouble()
        return when {
            n < 1024 -> "$count B"
            n < 1024 * 1024 -> String.format(Locale.ROOT, "%.1f KB", n / 1024)
            n < 1024.0 * 1024 * 1024 -> String.format(Locale.ROOT, "%.1f MB", n / 1024 / 1024)
            else -> String.format(Locale.ROOT, "%.2f GB", n / 1024 / 1024 / 1024)
        }
    }
}
