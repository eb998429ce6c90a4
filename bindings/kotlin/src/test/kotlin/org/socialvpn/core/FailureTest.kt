package org.socialvpn.core

import com.sun.jna.NativeLong
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows
import java.io.File

/** What goes wrong in the field surfaces as typed states and errors, never a crash. */
class FailureTest {
    @Test
    fun `a wrong password ends in the auth-failed state and the engine keeps answering`() {
        val listener = RecordingListener()
        SocialVpn(World.config("kate", World.stateDir("kate"), password = "not-her-password"), listener, null).use { vpn ->
            listener.awaitState(20) { it is VpnState.AuthFailed }
            assertEquals("auth_failed", vpn.status().xmpp)
            // No retry storm: still refused a while later, and still answering.
            Thread.sleep(2000)
            assertEquals("auth_failed", vpn.status().xmpp)
            assertTrue(vpn.roster().isEmpty())
            vpn.stop()
            listener.awaitState(10) { it is VpnState.Stopped }
            assertThrows<VpnException.Stopped> { vpn.status() }
            vpn.stop() // twice is fine
        }
    }

    @Test
    fun `a sign-in that cannot work is a typed error`() {
        assertThrows<SignInException.InvalidJid> { oauthPasswordGrant("no-at-sign", "pw", null, null, null, emptyList()) }
        assertThrows<SignInException.BadUrl> {
            oauthPasswordGrant("kate@svpn.test", "pw", "http://svpn.test/oauth/token", null, null, emptyList())
        }
        // Nothing listens there: refused at once, not a hang.
        assertThrows<SignInException.Unreachable> {
            oauthPasswordGrant("kate@svpn.test", "pw", "https://127.0.0.1:1/oauth/token", null, null, emptyList())
        }
        // The browser flow: the URL to open, and a redirect that answers another sign-in refused.
        val started = oauthBrowserSignIn("kate@svpn.test", null, "org.socialvpn.app:/signed-in", null)
        assertTrue(started.url.startsWith("https://svpn.test:5443/oauth/authorization_token?"), started.url)
        assertTrue(started.url.contains("state=${started.state}"), started.url)
        assertEquals(null, started.codeVerifier)
        assertThrows<SignInException.ForeignState> {
            oauthTokenFromRedirect(started, "org.socialvpn.app:/signed-in?access_token=t&state=forged", null, emptyList())
        }
        val token = oauthTokenFromRedirect(
            started, "org.socialvpn.app:/signed-in?access_token=t0k&expires_in=60&state=${started.state}", null, emptyList(),
        )
        assertEquals("t0k", token.token)
        // The code flow with PKCE: a challenge in the URL, the verifier kept by the app only.
        val code = oauthBrowserSignIn(
            "kate@svpn.test", "https://as.svpn.test/authorize", "org.socialvpn.app:/signed-in",
            CodeFlow("https://as.svpn.test/token", "socialvpn"),
        )
        val verifier = code.codeVerifier ?: error("no verifier")
        assertTrue(code.url.contains("code_challenge_method=S256"), code.url)
        assertTrue(!code.url.contains(verifier), code.url)
        assertEquals("https://as.svpn.test/token", code.tokenUrl)
        assertThrows<SignInException.ForeignState> {
            oauthTokenFromRedirect(code, "org.socialvpn.app:/signed-in?code=c&state=forged", null, emptyList())
        }
        // The world's prosody offers no token login: said, and the engine keeps answering.
        val listener = RecordingListener()
        val config = World.config("kate", World.stateDir("kate")).copy(signIn = SignIn.Token("a-token"))
        SocialVpn(config, listener, null).use { vpn ->
            val offline = listener.awaitState(20) { it is VpnState.Offline } as VpnState.Offline
            assertTrue(offline.reason.contains("no token login"), offline.reason)
            assertTrue(vpn.roster().isEmpty())
        }
    }

    @Test
    fun `invalid fds and bad input are typed errors`() {
        val listener = RecordingListener()
        SocialVpn(World.config("kate", World.stateDir("kate")), listener, null).use { vpn ->
            val negative = assertThrows<VpnException.InvalidFd> { vpn.startTunnel(-1, TunFraming.RAW_IP) }
            assertEquals(-1, negative.fd)
            assertThrows<VpnException.InvalidFd> { vpn.startTunnel(987_654, TunFraming.RAW_IP) }
            // An open fd that is not a tunnel (a regular file) is refused and left open.
            val fd = LibC.lib.open(File(World.workDir, "not-a-tun").path, LibC.O_WRONLY_CREAT, 0x180)
            assertTrue(fd >= 0)
            val e = assertThrows<VpnException.InvalidFd> { vpn.startTunnel(fd, TunFraming.RAW_IP) }
            assertTrue(e.reason.contains("not a tunnel"), e.reason)
            // Refused fds stay the caller's: still open.
            assertEquals(1L, LibC.lib.write(fd, byteArrayOf(1), NativeLong(1)).toLong())
            assertEquals(0, LibC.lib.close(fd))
            assertThrows<VpnException.InvalidJid> { vpn.addFriend("not a jid@@") }
            assertFalse(vpn.status().tunnel)
            listener.awaitState(20) { it is VpnState.Online }
            // A character device the engine cannot watch: refused by the engine itself, and
            // the fd is still the caller's; so it is once the engine has stopped.
            val devNull = LibC.lib.open("/dev/null", LibC.O_RDWR, 0)
            assertTrue(devNull >= 0)
            assertThrows<VpnException.Tunnel> { vpn.startTunnel(devNull, TunFraming.RAW_IP) }
            assertEquals(1L, LibC.lib.write(devNull, byteArrayOf(1), NativeLong(1)).toLong())
            assertFalse(vpn.status().tunnel)
            vpn.stop()
            assertThrows<VpnException.Stopped> { vpn.startTunnel(devNull, TunFraming.RAW_IP) }
            assertEquals(1L, LibC.lib.write(devNull, byteArrayOf(1), NativeLong(1)).toLong())
            assertEquals(0, LibC.lib.close(devNull))
        }
        val bad = World.config("kate", World.stateDir("kate")).copy(subnet = "100.64.0.0/33")
        assertThrows<VpnException.InvalidConfig> { SocialVpn(bad, RecordingListener(), null) }
        val badTurn = World.config("kate", World.stateDir("kate"))
            .copy(iceServers = World.iceServers().map { it.copy(password = null) })
        assertTrue(badTurn.iceServers.any { it.url.startsWith("turn:") })
        assertThrows<VpnException.InvalidConfig> { SocialVpn(badTurn, RecordingListener(), null) }
    }

    @Test
    fun `a protector that refuses is a clear error`() {
        val refusing = object : SocketProtector {
            override fun protect(fd: Int): Boolean = false
        }
        assertThrows<VpnException.ProtectRefused> {
            SocialVpn(World.config("kate", World.stateDir("kate")), RecordingListener(), refusing)
        }
    }
}
