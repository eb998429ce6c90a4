package org.socialvpn.core

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import java.util.concurrent.ConcurrentLinkedQueue
import java.util.concurrent.CountDownLatch
import java.util.concurrent.TimeUnit
import java.util.concurrent.atomic.AtomicInteger

/** The app's callbacks may misbehave or call back in; the engine carries on either way. */
class CallbackTest {
    @Test
    fun `a listener that throws leaves the engine working`() {
        val calls = AtomicInteger()
        val throwing = object : VpnEventListener {
            override fun onState(state: VpnState) { calls.incrementAndGet(); throw IllegalStateException("boom") }
            override fun onRosterChanged() { calls.incrementAndGet(); throw RuntimeException("boom") }
            override fun onFriendRequest(jid: String) { throw IllegalArgumentException("boom") }
            override fun onLink(link: LinkEvent) { throw CallbackException.Failed("declared") }
            override fun onTunnelLost(reason: String) { throw IllegalStateException("boom") }
        }
        SocialVpn(World.config("liam", World.stateDir("liam")), throwing, null).use { vpn ->
            eventually(20, "online") { vpn.status().takeIf { it.xmpp == "online" } }
            eventually(20, "the listener called more than once") { Unit.takeIf { calls.get() >= 2 } }
            vpn.roster()
            vpn.addFriend(World.get("kate.jid"))
            eventually(10, "the request in the roster") { vpn.roster().firstOrNull { it.pendingOut } }
            vpn.removeFriend(World.get("kate.jid"))
            vpn.stop()
        }
    }

    @Test
    fun `a listener that calls back into the engine does not deadlock`() {
        // Callbacks may run on engine threads before the constructor has returned; they wait
        // for the object (as an app's would) instead of racing its assignment.
        val created = CountDownLatch(1)
        lateinit var assigned: SocialVpn
        fun vpn(): SocialVpn {
            check(created.await(20, TimeUnit.SECONDS)) { "the engine was never created" }
            return assigned
        }
        val answers = ConcurrentLinkedQueue<String>()
        val failures = ConcurrentLinkedQueue<Throwable>()
        val reentrant = object : VpnEventListener {
            fun safely(f: () -> String) = try { answers.add(f()) } catch (e: Throwable) { failures.add(e); Unit }
            override fun onState(state: VpnState) { if (state !is VpnState.Stopped) safely { "status:" + vpn().status().xmpp } }
            override fun onRosterChanged() { safely { "roster:" + vpn().roster().size } }
            override fun onFriendRequest(jid: String) { safely { vpn().declineFriend(jid); "declined" } }
            override fun onLink(link: LinkEvent) { safely { "links:" + vpn().links().size } }
            override fun onTunnelLost(reason: String) { safely { "tunnel:" + vpn().status().tunnel } }
        }
        // A protector runs inside the engine: calling in from there is refused, not a hang.
        // The UDP socket is protected on the constructing thread itself, which cannot wait for
        // the constructor to return; every later socket (the XMPP connection) is protected on an
        // engine thread.
        val constructing = Thread.currentThread()
        val protectorCalls = ConcurrentLinkedQueue<String>()
        val protector = object : SocketProtector {
            override fun protect(fd: Int): Boolean {
                if (Thread.currentThread() === constructing) return true
                protectorCalls.add(try { vpn().status(); "answered" } catch (e: VpnException.Reentrant) { "reentrant" } catch (e: Throwable) { e.toString() })
                return true
            }
        }
        val config = World.config("liam", World.stateDir("liam"))
        assigned = SocialVpn(config, reentrant, protector)
        created.countDown()
        assigned.use { vpn ->
            eventually(20, "status answered from inside a callback") { answers.firstOrNull { it == "status:online" } }
            eventually(20, "roster answered from inside a callback") { answers.firstOrNull { it.startsWith("roster:") } }
            eventually(20, "the XMPP socket protected") { protectorCalls.firstOrNull() }
            assertEquals(listOf("reentrant"), protectorCalls.toList().distinct(), "$protectorCalls")
            assertTrue(failures.isEmpty(), "$failures")
            assertEquals("online", vpn.status().xmpp)
            vpn.stop()
        }
    }
}
