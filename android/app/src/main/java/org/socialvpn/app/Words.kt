package org.socialvpn.app

import org.socialvpn.core.Device
import org.socialvpn.core.LinkState
import org.socialvpn.core.SignInException
import org.socialvpn.core.VpnException
import org.socialvpn.core.VpnState
import java.util.Locale

/**
 * What the app says about the engine's state and failures, in words a user can act on (the
 * engine's own reasons are already worded; the typed ones get the app's sentence). The iOS
 * app says the same (ios/ keeps the same sentences).
 */
object Words {
    fun state(state: VpnState): String = when (state) {
        is VpnState.Connecting -> "Connecting to your XMPP server…"
        is VpnState.Online -> "Online"
        is VpnState.Offline -> offline(state.reason, state.retryInSecs)
        is VpnState.AuthFailed -> "Wrong address or password. Check them and sign in again."
        is VpnState.TokenRejected -> "Your sign-in has expired. Sign in again."
        is VpnState.Stopped -> state.error?.let { "Stopped: $it" } ?: "Off"
    }

    /** The engine's offline reasons start with what failed; the user needs to know which kind. */
    private fun offline(reason: String, retryInSecs: ULong): String {
        val head = when {
            reason.contains("certificate", ignoreCase = true) ->
                "The server's certificate is not trusted. If your server uses its own CA, add its file under Advanced."
            reason.startsWith("cannot reach", ignoreCase = true) ->
                "Cannot reach the server. Check the address and your connection."
            reason.contains("does not serve this account's domain") ->
                "That server does not host this account's domain. Check the server under Advanced."
            else -> "Offline: " + reason.replaceFirstChar { it.uppercase() } + "."
        }
        return if (retryInSecs in 1uL..3600uL) "$head Trying again in $retryInSecs s." else head
    }

    fun error(error: VpnException): String = when (error) {
        is VpnException.InvalidJid -> "“${error.jid}” is not an XMPP address (alice@example.org)."
        is VpnException.InvalidConfig -> "Check the settings: ${error.reason}."
        is VpnException.StateDirectory -> "The app cannot use its storage: ${error.reason}."
        is VpnException.InvalidFd, is VpnException.Tunnel -> "The VPN interface could not be used. Switch the VPN off and on."
        is VpnException.ProtectRefused -> "Android refused to keep SocialVPN's own traffic out of the VPN."
        is VpnException.Socket -> "SocialVPN could not open its network socket: ${error.reason}."
        is VpnException.Friend -> error.reason.replaceFirstChar { it.uppercase() }
        is VpnException.Refused -> error.reason.replaceFirstChar { it.uppercase() }
        is VpnException.Stopped -> "SocialVPN has stopped. Sign in again."
        is VpnException.Reentrant -> "Internal error (re-entrant engine call)."
    }

    fun signIn(error: SignInException): String = when (error) {
        is SignInException.InvalidJid -> "“${error.jid}” is not an XMPP address (alice@example.org)."
        is SignInException.Refused -> "Wrong address or password."
        is SignInException.NoAnswer -> "Wrong address or password (the server hung up without a word)."
        is SignInException.Unreachable -> "Cannot reach the sign-in server. Check your connection."
        is SignInException.TimedOut -> "The sign-in server did not answer in time. Try again."
        is SignInException.Certificate -> "The sign-in server's certificate is not trusted."
        is SignInException.ForeignState -> "That sign-in was not started by this app; try again."
        is SignInException.BadUrl -> "This server does not offer browser sign-in."
        is SignInException.BadAnswer -> "The sign-in server answered something unexpected."
    }

    /** A device's link, as its row says it. */
    fun link(link: LinkState): String = when (link) {
        is LinkState.None -> "Not linked"
        is LinkState.Connecting -> "Connecting…"
        is LinkState.Direct -> "Direct" + rtt(link.rttMs)
        is LinkState.Relayed -> "Relayed" + rtt(link.rttMs)
        is LinkState.Retrying -> "No path yet, retrying"
        is LinkState.ClosedByPeer -> "They switched you off"
    }

    private fun rtt(ms: Double?): String = ms?.let { " · " + String.format(Locale.ROOT, "%.0f ms", it) } ?: ""

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
