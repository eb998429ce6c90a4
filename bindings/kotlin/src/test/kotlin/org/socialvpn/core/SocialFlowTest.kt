package org.socialvpn.core

import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNotEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.MethodOrderer
import org.junit.jupiter.api.Order
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.TestMethodOrder

/**
 * Alice's phone, as the app would drive it: sign in and see the roster, befriend the Rust
 * peer, switch her off and on across an engine restart, then carry ping traffic through a
 * tunnel fd. One engine story, so the steps run in order.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
@TestMethodOrder(MethodOrderer.OrderAnnotation::class)
class SocialFlowTest {
    private val stateDir = World.stateDir("alice")
    private var listener = RecordingListener()
    private var vpn: SocialVpn? = null
    private val peer = World.get("peer.jid")
    private val requester = World.get("requester.jid")

    private fun engine(): SocialVpn = vpn ?: error("no engine")

    private fun start(): SocialVpn {
        listener = RecordingListener()
        return SocialVpn(World.config("alice", stateDir), listener, null).also { vpn = it }
    }

    private fun entry(jid: String): Friend? = engine().roster().firstOrNull { it.jid == jid }

    @AfterAll
    fun stop() {
        vpn?.let { it.stop(); it.close() }
    }

    @Test
    @Order(1)
    fun `logs in, hears the state and roster events, lists the roster`() {
        setLogLevel(LogLevel.INFO)
        start()
        listener.awaitState(20) { it is VpnState.Online }
        listener.await(20, "roster event") { it as? RecordingListener.Event.RosterChanged }
        // dave asked before alice ever signed in: the request is in her first roster.
        val dave = eventually(20, "dave's request in the roster") { entry(requester) }
        assertTrue(dave.pendingIn, "$dave")
        assertFalse(dave.mutual, "$dave")
        listener.await(20, "friend request event") { (it as? RecordingListener.Event.FriendRequest)?.takeIf { e -> e.jid == requester } }
        // Events come on the engine's thread, never the caller's.
        assertFalse(Thread.currentThread().name in listener.threads, "${listener.threads}")
        val status = engine().status()
        assertEquals("online", status.xmpp)
        assertFalse(status.tunnel)
        engine().declineFriend(requester)
        eventually(20, "the request gone") { Unit.takeIf { entry(requester)?.pendingIn != true } }
    }

    @Test
    @Order(2)
    fun `adds a friend and sees the Rust peer accept`() {
        engine().addFriend(peer)
        eventually(20, "the request pending") { entry(peer)?.takeIf { it.pendingOut } }
        eventually(20, "the request at the peer") { World.peer("friends").takeIf { it.contains("alice@") } }
        World.peer("friend", "accept", World.get("alice.jid"))
        val friend = eventually(30, "the peer as a mutual friend with a SocialVPN device") {
            entry(peer)?.takeIf { it.mutual && it.enabled && it.devices.any { d -> d.socialvpn } }
        }
        assertFalse(friend.pendingOut)
        listener.await(30, "link up") { (it as? RecordingListener.Event.Link)?.link?.takeIf { l -> l.up } }
    }

    @Test
    @Order(3)
    fun `a friend switched off stays off across an engine restart`() {
        engine().setFriendEnabled(peer, false)
        eventually(10, "the friend off") { entry(peer)?.takeIf { !it.enabled } }
        listener.await(30, "link closed") { (it as? RecordingListener.Event.Link)?.link?.takeIf { l -> !l.up } }
        val deviceId = engine().deviceId()

        engine().stop()
        listener.awaitState(10) { it is VpnState.Stopped && it.error == null }
        engine().close()
        vpn = null

        start()
        assertEquals(deviceId, engine().deviceId(), "the device key did not survive")
        listener.awaitState(20) { it is VpnState.Online }
        val after = eventually(20, "the peer back in the roster") { entry(peer)?.takeIf { it.mutual } }
        assertFalse(after.enabled, "the switch did not survive the restart")
        // Off means no link, even with the peer online.
        Thread.sleep(3000)
        assertTrue(entry(peer)!!.devices.all { it.link is LinkState.None }, "${entry(peer)}")

        engine().setFriendEnabled(peer, true)
        eventually(10, "the friend on") { entry(peer)?.takeIf { it.enabled } }
    }

    @Test
    @Order(4)
    fun `carries ping traffic through a tunnel fd handed over like VpnService does`() {
        val settings = engine().tunnelSettings()
        assertTrue(settings.ipv4.startsWith("100.64."), "$settings")
        val fd = LinuxTun.open("svpn-kt0", settings)
        engine().startTunnel(fd, TunFraming.RAW_IP)
        assertTrue(engine().status().tunnel)

        val link = listener.await(40, "link up after enabling") {
            (it as? RecordingListener.Event.Link)?.link?.takeIf { l -> l.up }
        }
        // alice is behind a cone NAT, carol on a public address: a direct path.
        assertFalse(link.relayed, "$link")
        val device = eventually(30, "the peer's device with an address and a direct link") {
            entry(peer)?.devices?.firstOrNull { d -> d.overlayAddress != null && d.link is LinkState.Direct }
        }
        val address = device.overlayAddress!!
        assertTrue(address.startsWith("100.64."), address)
        val (ok, out) = World.run("ping", "-c", "3", "-i", "0.2", "-W", "2", "-w", "10", address)
        assertTrue(ok, out)
        val traffic = engine().status()
        assertNotEquals(0uL, traffic.txBytes)
        assertTrue(engine().links().any { it.session && it.rxBytes > 0uL }, "${engine().links()}")

        // Switching the VPN off closes the fd and keeps the account online.
        engine().stopTunnel()
        assertFalse(engine().status().tunnel)
        assertEquals("online", engine().status().xmpp)
        val (after, _) = World.run("ping", "-c", "1", "-W", "1", address)
        assertFalse(after, "ping worked without a tunnel")

        // The interface deleted under the engine (as when the platform tears the VPN down):
        // the app is told, the engine stays online, and a new fd turns the VPN on again.
        val second = LinuxTun.open("svpn-kt1", settings)
        engine().startTunnel(second, TunFraming.RAW_IP)
        assertTrue(engine().status().tunnel)
        val (deleted, delOut) = World.run("ip", "link", "del", "svpn-kt1")
        assertTrue(deleted, delOut)
        listener.await(10, "tunnel lost") { it as? RecordingListener.Event.TunnelLost }
        assertFalse(engine().status().tunnel)
        assertEquals("online", engine().status().xmpp)
        val third = LinuxTun.open("svpn-kt2", settings)
        engine().startTunnel(third, TunFraming.RAW_IP)
        assertTrue(engine().status().tunnel)
        eventually(20, "ping through the new tunnel") {
            World.run("ping", "-c", "1", "-W", "1", address).first.takeIf { it }
        }
        engine().stopTunnel()
    }
}
