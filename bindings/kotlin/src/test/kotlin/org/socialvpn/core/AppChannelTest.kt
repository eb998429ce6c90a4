package org.socialvpn.core

import org.json.JSONObject
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows
import java.util.concurrent.CompletableFuture
import java.util.concurrent.TimeUnit

/**
 * The iOS app ↔ tunnel extension channel, exactly as the Swift code runs it: the app
 * encodes typed requests with the core (`encodeControlRequest`), the extension hands the
 * bytes to `handleControl` and returns the reply's bytes, the app decodes them
 * (`decodeControlReply`); events come by long poll (`Events`), since the extension cannot
 * call the app. The engine here is kate's, signed in to the world's XMPP server.
 */
class AppChannelTest {
    /** The extension's `handleAppMessage`: bytes in, the engine's bytes out, nothing else. */
    private class Extension(val vpn: SocialVpn) {
        fun handleAppMessage(message: ByteArray): ByteArray = vpn.handleControl(message)
    }

    /** The app's `TunnelClient.request`. */
    private class App(val extension: Extension) {
        var cursor = 0uL

        fun request(request: ControlRequest): ControlReply =
            decodeControlReply(extension.handleAppMessage(encodeControlRequest(request)))

        fun events(waitMs: UInt): List<ControlEvent> {
            val reply = request(ControlRequest.Events(cursor, waitMs)) as ControlReply.Events
            cursor = reply.next
            return reply.events
        }
    }

    @Test
    fun `the app's requests, replies and long-polled events travel through the extension`() {
        // The bytes are the protocol's own, as the Swift app sends them.
        val wire = JSONObject(String(encodeControlRequest(ControlRequest.Events(7uL, 25_000u)), Charsets.UTF_8))
        assertTrue(
            wire.similar(JSONObject("""{"v":1,"cmd":"events","after":7,"wait_ms":25000}""")),
            "$wire",
        )
        val pin = JSONObject(String(encodeControlRequest(ControlRequest.PinAddress("ab", "100.64.0.9")), Charsets.UTF_8))
        assertTrue(pin.similar(JSONObject("""{"v":1,"cmd":"pin_address","device":"ab","address":"100.64.0.9"}""")), "$pin")
        assertThrows<VpnException.Refused> { encodeControlRequest(ControlRequest.PinAddress("ab", "100.64.0")) }

        SocialVpn(World.config("kate", World.stateDir("kate")), RecordingListener(), null).use { vpn ->
            val app = App(Extension(vpn))
            // From the first call on, the app hears the account's states, in order.
            val states = mutableListOf<VpnState>()
            eventually(20, "online, heard by long poll") {
                app.events(5_000u).filterIsInstance<ControlEvent.State>().forEach { states.add(it.state) }
                states.takeIf { VpnState.Online in it }
            }
            assertEquals(VpnState.Connecting, states.first(), "$states")
            assertEquals("Online", describeState(states.last()))
            val status = (app.request(ControlRequest.Status) as ControlReply.Status).status
            assertEquals(vpn.deviceId(), status.uid)
            assertEquals(vpn.tunnelSettings().ipv4, status.ipv4)

            // A poll that is up to date (what the sign-in brought is read first) waits in the
            // extension; a request sent meanwhile is answered at once, and the change it
            // makes ends the wait (else it would come back empty after 20 s).
            eventually(10, "nothing more to read") { app.events(500u).takeIf { it.isEmpty() } }
            val waiting = CompletableFuture.supplyAsync { app.events(20_000u) }
            Thread.sleep(300)
            assertTrue(!waiting.isDone, "an up-to-date poll returned at once")
            val liam = World.get("liam.jid")
            assertEquals(ControlReply.Done, app.request(ControlRequest.AddFriend(liam)))
            val woken = waiting.get(15, TimeUnit.SECONDS)
            assertTrue(woken.any { it == ControlEvent.RosterChanged }, "$woken")
            val friends = (app.request(ControlRequest.Roster) as ControlReply.Roster).friends
            assertTrue(friends.any { it.jid == liam && it.pendingOut }, "$friends")
            assertEquals(ControlReply.Done, app.request(ControlRequest.RemoveFriend(liam)))

            // A cursor from an earlier run of the extension gets this run's events from the
            // start, not a gap.
            val fresh = App(Extension(vpn)).apply { cursor = 12_345uL }.events(0u)
            assertEquals(ControlEvent.State(VpnState.Connecting), fresh.first(), "$fresh")

            // Failures come back as the typed errors the typed calls throw.
            assertThrows<VpnException.Refused> {
                app.request(ControlRequest.PinAddress("ab".repeat(20), "100.64.9.9"))
            }
            assertThrows<VpnException.Refused> { app.request(ControlRequest.AddFriend("not a jid@@")) }

            // Signing out: done, then the last event is the engine's end, and the extension
            // answers every later request with `stopped`.
            assertEquals(ControlReply.Done, app.request(ControlRequest.SignOut))
            val end = eventually(10, "the stopped state") {
                app.events(2_000u).filterIsInstance<ControlEvent.State>().firstOrNull { it.state is VpnState.Stopped }
            }
            assertEquals(VpnState.Stopped(null), end.state)
            assertThrows<VpnException.Stopped> { app.request(ControlRequest.Status) }
            vpn.stop()
        }
    }
}
