package org.socialvpn.app

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.RobolectricTestRunner
import org.socialvpn.core.Device
import org.socialvpn.core.LinkState
import org.socialvpn.core.VpnState

/**
 * The words users read, for the engine's states and the form's checks. In the Robolectric
 * sandbox like every other class (see robolectric.properties): the sentences come from the
 * core, and the core's callback table must stay the sandbox's.
 */
@RunWith(RobolectricTestRunner::class)
class WordsTest {
    @Test
    fun `offline reasons become advice`() {
        assertEquals(
            "The server's certificate is not trusted. If your server uses its own CA, add its file under Advanced. Trying again in 30 s.",
            Words.state(VpnState.Offline("the server's certificate is not trusted: unknown issuer", 30uL)),
        )
        assertTrue(Words.state(VpnState.Offline("cannot reach the server: connection refused", 5uL)).startsWith("Cannot reach the server."))
        assertEquals("Offline: Something else.", Words.state(VpnState.Offline("something else", 0uL)))
        assertEquals("Your sign-in has expired. Sign in again.", Words.state(VpnState.TokenRejected))
    }

    @Test
    fun `a device line says where it is and how it is linked`() {
        val device = Device("phone", true, "ab", "100.64.0.7", true, LinkState.Relayed(48.4), 2048uL, 5_000_000uL)
        assertEquals("phone — 100.64.0.7 (pinned)\nRelayed · 48 ms · ↑2.0 KB ↓4.8 MB", Words.device(device))
        assertEquals("phone — 100.64.0.7 (pinned)\nSwitched off · ↑2.0 KB ↓4.8 MB", Words.device(device.copy(link = LinkState.None), friendEnabled = false))
    }

    @Test
    fun `the form checks addresses, servers and subnets`() {
        assertEquals(emptyList<SignInForm.Problem>(), SignInForm("alice@example.org", "pw").problems())
        val fields = SignInForm("alice@", "", server = "host:99999", subnet = "100.64.0.0/33").problems().map { it.field }
        assertEquals(listOf(SignInForm.Field.JID, SignInForm.Field.PASSWORD, SignInForm.Field.SERVER, SignInForm.Field.SUBNET), fields)
        assertEquals(emptyList<SignInForm.Problem>(), SignInForm("a@b.org", "", server = "[2001:db8::1]:5222").problems(needsPassword = false))
    }
}
