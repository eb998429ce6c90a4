package org.socialvpn.app

import org.socialvpn.core.Friend
import org.socialvpn.core.Status
import org.socialvpn.core.VpnState

/** Where the account is in its life, as the screens need to know it. */
enum class Phase {
    SIGNED_OUT,

    /** Tried for the first time: a failure goes back to the sign-in screen with words. */
    SIGNING_IN,

    /** Was online once with these credentials: the engine retries by itself from here. */
    SIGNED_IN,
}

/**
 * Everything the screens show, made by [Session] from engine events on its own thread and
 * handed to the main thread whole: a screen renders a snapshot, it never asks the engine.
 */
data class Snapshot(
    val phase: Phase = Phase.SIGNED_OUT,
    val jid: String = "",
    val state: VpnState? = null,
    /** Why the last sign-in failed or the VPN could not start, in words. */
    val problem: String? = null,
    val status: Status? = null,
    val friends: List<Friend> = emptyList(),
    /** The VPN service holds a tunnel (the user's switch). */
    val vpnOn: Boolean = false,
) {
    /** People asking to be friends. */
    val requests: List<Friend> get() = friends.filter { it.pendingIn && !it.mutual && !it.own }

    /** Friends with at least one device running SocialVPN online now, and the user's own devices. */
    val onSocialVpn: List<Friend> get() = friends.filter { f -> !isRequest(f) && f.devices.any { it.socialvpn } }

    /** Everyone else on the roster: friends offline or on ordinary chat clients, asked-for friends. */
    val others: List<Friend> get() = friends.filter { f -> !isRequest(f) && f.devices.none { it.socialvpn } }

    private fun isRequest(f: Friend) = f.pendingIn && !f.mutual && !f.own
}
