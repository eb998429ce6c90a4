package org.socialvpn.core

import org.json.JSONObject
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit

/**
 * The control protocol as bytes, exactly as the iOS app talks to its tunnel extension:
 * requests in, replies out, events relayed as they come — nothing typed on this side.
 */
class ControlBytesTest {
    private class Sink : EventSink {
        val events = LinkedBlockingQueue<JSONObject>()
        override fun onEvent(event: ByteArray) {
            events.add(JSONObject(String(event, Charsets.UTF_8)))
        }

        fun await(seconds: Long, what: String, match: (JSONObject) -> Boolean): JSONObject {
            val deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds)
            val seen = mutableListOf<JSONObject>()
            while (true) {
                val left = deadline - System.nanoTime()
                if (left <= 0) throw AssertionError("no $what within ${seconds}s; events: $seen")
                val event = events.poll(left, TimeUnit.NANOSECONDS) ?: continue
                seen.add(event)
                assertEquals(1, event.getInt("v"), "$event")
                if (match(event)) return event
            }
        }
    }

    private fun SocialVpn.ask(request: String): JSONObject {
        val reply = JSONObject(String(handleControl(request.toByteArray()), Charsets.UTF_8))
        assertEquals(1, reply.getInt("v"), "$reply")
        return reply
    }

    private fun JSONObject.errorKind(): String? = optJSONObject("error")?.getString("kind")

    @Test
    fun `requests, replies and events travel as the protocol's bytes`() {
        val sink = Sink()
        SocialVpn(World.config("kate", World.stateDir("kate")), RecordingListener(), null).use { vpn ->
            vpn.subscribeEvents(sink)
            val status = eventually(20, "online, asked in bytes") {
                vpn.ask("""{"v":1,"cmd":"status"}""").getJSONObject("status")
                    .takeIf { it.optJSONObject("xmpp")?.getString("state") == "online" }
            }
            assertEquals(vpn.deviceId(), status.getString("uid"))
            assertTrue(status.getString("ipv4").startsWith("100.64."), "$status")

            val liam = World.get("liam.jid")
            val added = vpn.ask("""{"v":1,"cmd":"friend","action":"add","jid":"$liam"}""")
            assertEquals("done", added.getString("reply"), "$added")
            sink.await(20, "a roster event") { it.getString("event") == "roster_changed" }
            val entry = eventually(20, "the request in the roster") {
                val friends = vpn.ask("""{"v":1,"cmd":"roster"}""").getJSONArray("friends")
                (0 until friends.length()).map { friends.getJSONObject(it) }
                    .firstOrNull { it.getString("jid") == liam && it.getBoolean("pending_out") }
            }
            assertEquals(false, entry.getBoolean("mutual"), "$entry")

            // With the app's screens hidden, what only they would show is held; shown again,
            // they catch up at once.
            assertEquals("done", vpn.ask("""{"v":1,"cmd":"background"}""").getString("reply"))
            val hidden = vpn.ask("""{"v":1,"cmd":"status"}""").getJSONObject("status")
            assertEquals(false, hidden.getBoolean("foreground"), "$hidden")
            Thread.sleep(1000)
            sink.events.clear()
            val removed = vpn.ask("""{"v":1,"cmd":"friend","action":"remove","jid":"$liam"}""")
            assertEquals("done", removed.getString("reply"), "$removed")
            val screenEvents = setOf("roster_changed", "xmpp", "link")
            val deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(3)
            while (System.nanoTime() < deadline) {
                val event = sink.events.poll(100, TimeUnit.MILLISECONDS) ?: continue
                assertTrue(event.getString("event") !in screenEvents, "sent while hidden: $event")
            }
            assertEquals("done", vpn.ask("""{"v":1,"cmd":"foreground"}""").getString("reply"))
            sink.await(5, "the roster catching up") { it.getString("event") == "roster_changed" }
            val shown = vpn.ask("""{"v":1,"cmd":"status"}""").getJSONObject("status")
            assertEquals(true, shown.getBoolean("foreground"), "$shown")

            // Whatever is not a request is answered, never acted upon in part.
            assertEquals("bad_request", vpn.ask("not json").errorKind())
            assertEquals("bad_request", vpn.ask("""{"cmd":"status"}""").errorKind())
            assertEquals("bad_request", vpn.ask("""{"v":1,"cmd":"reboot"}""").errorKind())
            assertEquals("unsupported_version", vpn.ask("""{"v":99,"cmd":"status"}""").errorKind())
            assertEquals(
                "bad_jid",
                vpn.ask("""{"v":1,"cmd":"friend","action":"add","jid":"not a jid@@"}""").errorKind(),
            )
            // A device the engine never saw holds no address, pinned or not.
            assertEquals(
                "bad_device",
                vpn.ask("""{"v":1,"cmd":"pin_address","device":"${"ab".repeat(20)}","address":"100.64.9.9"}""").errorKind(),
            )
            // With an account, links are the friend policy's alone.
            assertEquals(
                "peer_refused",
                vpn.ask("""{"v":1,"cmd":"add_peer","public_key":"${"11".repeat(32)}","endpoint":"198.18.0.2:4500"}""").errorKind(),
            )
            // A field this engine does not know refuses the whole request, even a bare one.
            assertEquals("bad_request", vpn.ask("""{"v":1,"cmd":"sign_out","keep":true}""").errorKind())
            assertEquals("done", vpn.ask("""{"v":1,"cmd":"set_log_level","level":"info"}""").getString("reply"))

            // Signing out stops the engine: the last event says so, and later requests are
            // answered with `stopped`.
            assertEquals("done", vpn.ask("""{"v":1,"cmd":"sign_out"}""").getString("reply"))
            val stopped = sink.await(10, "the stopped event") { it.getString("event") == "stopped" }
            assertTrue(stopped.isNull("error"), "$stopped")
            assertEquals("stopped", vpn.ask("""{"v":1,"cmd":"status"}""").errorKind())
            vpn.stop()
        }
    }
}
