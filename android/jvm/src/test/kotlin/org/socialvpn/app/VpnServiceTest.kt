package org.socialvpn.app

import android.app.ForegroundServiceStartNotAllowedException
import android.app.NotificationManager
import android.content.Intent
import android.content.pm.ServiceInfo
import android.net.ConnectivityManager
import android.net.IpPrefix
import android.net.LinkAddress
import android.net.RouteInfo
import android.service.quicksettings.Tile
import android.widget.ListView
import org.junit.After
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertNotNull
import org.junit.Assert.assertTrue
import org.junit.Before
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.Robolectric
import org.robolectric.RobolectricTestRunner
import org.robolectric.RuntimeEnvironment
import org.robolectric.Shadows.shadowOf
import org.robolectric.shadows.ShadowNetwork
import org.robolectric.shadows.ShadowVpnService
import org.socialvpn.core.World
import java.net.InetAddress

/**
 * The VPN service on the real core in the world: always-on's start with a null intent signs
 * in from the stored account and brings the tunnel up; the Builder gets the engine's
 * addresses, routes and MTU; the notification has its type, channel and disconnect action;
 * the tile shows the truth; network callbacks reach the engine; onRevoke ends it; a refused
 * foreground start does not crash it; without consent it does not start.
 */
@RunWith(RobolectricTestRunner::class)
class VpnServiceTest {
    private val app get() = RuntimeEnvironment.getApplication()

    @Before
    fun setUp() {
        TestPlatform.install("svpn-sv")
        // The user granted the VPN consent before (the last test takes it away).
        ShadowVpnService.setPrepareResult(null)
        // Signed in before: the account and its sealed password are stored.
        Session.get(app).store.save(
            Account(jid = World.get("noah.jid"), usesToken = false, caFile = World.get("ca.file")),
            World.get("noah.password"),
        )
    }

    @After
    fun tearDown() {
        ShadowVpnService.reset()
        Session.endProcess()
    }

    private fun alwaysOnStart(): SocialVpnService {
        val service = Robolectric.buildService(SocialVpnService::class.java).create().get()
        // Always-on VPN: Android starts the service with no intent at all.
        service.onStartCommand(null, 0, 1)
        return service
    }

    @Test
    fun `always-on start signs in from stored credentials and configures the interface`() {
        val service = alwaysOnStart()
        waitOnMain(40, "the tunnel up") { service.takeIf { it.tunnelUp } }
        val snapshot = waitOnMain(20, "signed in and on") { Session.get(app).snapshot.takeIf { it.vpnOn && it.status != null } }
        assertEquals(Phase.SIGNED_IN, snapshot.phase)

        val settings = Session.get(app).blocking { it!!.tunnelSettings() }
        val builder = assertNotNullT(TestPlatform.lastBuilder)
        val addresses: List<LinkAddress> = field(builder, "mAddresses")
        val routes: List<RouteInfo> = field(builder, "mRoutes")
        val config: Any = field(builder, "mConfig")
        assertEquals("${settings.ipv4}/${settings.ipv4Prefix}", addresses[0].toString())
        assertEquals(InetAddress.getByName(settings.ipv6), addresses[1].address)
        assertEquals(64, addresses[1].prefixLength)
        val (net, bits) = settings.ipv4Route.split('/')
        assertEquals(IpPrefix(InetAddress.getByName(net), bits.toInt()), routes[0].destination)
        assertEquals(64, routes[1].destination.prefixLength)
        assertEquals(2, routes.size)  // only friends' addresses enter the tunnel
        assertEquals(settings.mtu.toInt(), config.javaClass.getField("mtu").getInt(config))
        assertEquals("SocialVPN", config.javaClass.getField("session").get(config))
        @Suppress("UNCHECKED_CAST")
        val disallowed = config.javaClass.getField("disallowedApplications").get(config) as List<String>
        assertEquals(listOf(app.packageName), disallowed)

        // The foreground notification: its type, channel, text and disconnect action.
        assertEquals(ServiceInfo.FOREGROUND_SERVICE_TYPE_SYSTEM_EXEMPTED, service.foregroundServiceType)
        val shadow = shadowOf(service)
        assertEquals(SocialVpnService.NOTIFICATION_ID, shadow.lastForegroundNotificationId)
        val nm = app.getSystemService(NotificationManager::class.java)
        assertEquals(NotificationManager.IMPORTANCE_LOW, nm.getNotificationChannel(SocialVpnService.CHANNEL_ID).importance)
        val shown = waitOnMain(10, "the notification saying on") {
            shadowOf(nm).allNotifications.lastOrNull()?.takeIf { shadowOf(it).contentTitle == "SocialVPN is on" }
        }
        assertTrue(shadowOf(shown).contentText.toString(), shadowOf(shown).contentText.contains(settings.ipv4))
        assertEquals(listOf("Disconnect"), shown.actions.map { it.title.toString() })

        // The tile shows the same truth.
        val tile = Robolectric.buildService(VpnTileService::class.java).create().get()
        tile.onStartListening()
        assertEquals(Tile.STATE_ACTIVE, tile.qsTile.state)

        // Network changes: the first callback is the current network, the next ones reach the engine.
        val cm = app.getSystemService(ConnectivityManager::class.java)
        val callbacks = shadowOf(cm).networkCallbacks
        assertEquals(1, callbacks.size)
        callbacks.forEach { it.onAvailable(ShadowNetwork.newInstance(100)) }
        callbacks.forEach { it.onLost(ShadowNetwork.newInstance(100)) }
        callbacks.forEach { it.onAvailable(ShadowNetwork.newInstance(101)) }
        waitOnMain(10, "one network change") { service.networkChanges.takeIf { it == 1 } }
        // The engine restarts its XMPP session on the new network and is back online.
        waitOnMain(30, "online again after the change") {
            Session.get(app).blocking { it!!.status().xmpp }.takeIf { it == "online" }
        }

        // Another VPN takes over: the service ends, the app and tile say so, the engine stays signed in.
        service.onRevoke()
        val off = waitOnMain(10, "the VPN off") { Session.get(app).snapshot.takeIf { !it.vpnOn } }
        assertTrue(off.problem!!.contains("switched off"))
        assertTrue(shadow.isStoppedBySelf)
        assertTrue(shadowOf(cm).networkCallbacks.isEmpty())
        waitOnMain(10, "the engine's tunnel closed") {
            Session.get(app).blocking { it!!.status().tunnel }.takeIf { !it }
        }
        tile.onStopListening()
        tile.onStartListening()
        assertEquals(Tile.STATE_INACTIVE, tile.qsTile.state)
    }

    @Test
    fun `a refused foreground start does not crash and the VPN still comes up`() {
        val service = Robolectric.buildService(SocialVpnService::class.java).create().get()
        shadowOf(service).setThrowInStartForeground(ForegroundServiceStartNotAllowedException("test"))
        service.onStartCommand(Intent(service, SocialVpnService::class.java).setAction(SocialVpnService.ACTION_CONNECT), 0, 1)
        waitOnMain(40, "the tunnel up") { service.takeIf { it.tunnelUp } }
        service.onStartCommand(Intent(service, SocialVpnService::class.java).setAction(SocialVpnService.ACTION_DISCONNECT), 0, 2)
        waitOnMain(10, "the VPN off") { Session.get(app).snapshot.takeIf { !it.vpnOn } }
    }

    @Test
    fun `without the VPN consent the service does not start and says why`() {
        ShadowVpnService.setPrepareResult(Intent("android.net.vpn.action.PREPARE"))
        val service = alwaysOnStart()
        assertTrue(shadowOf(service).isStoppedBySelf)
        val snapshot = waitOnMain(10, "the reason") { Session.get(app).snapshot.takeIf { it.problem != null } }
        assertTrue(snapshot.problem!!.contains("Allow SocialVPN"))
        assertFalse(service.tunnelUp)
    }

    @Test
    fun `after process death the app opens on the friends screen and signs in again`() {
        val first = Robolectric.buildActivity(MainActivity::class.java).setup().get()
        waitOnMain(40, "online") { Session.get(app).snapshot.takeIf { it.phase == Phase.SIGNED_IN && it.status != null } }
        assertNotNull(first.findViewById<ListView>(Ids.FRIENDS))
        Session.endProcess()
        val again = Robolectric.buildActivity(MainActivity::class.java).setup().get()
        assertNotNull("friends screen at once", again.findViewById<ListView>(Ids.FRIENDS))
        waitOnMain(40, "signed in again") { Session.get(app).snapshot.takeIf { it.phase == Phase.SIGNED_IN } }
    }

    /** The Builder has no shadow: what it collected is read from its fields (API 34 layout). */
    private fun <T> field(obj: Any, name: String): T {
        val f = obj.javaClass.getDeclaredField(name)
        f.isAccessible = true
        @Suppress("UNCHECKED_CAST")
        return f.get(obj) as T
    }

    private fun <T> assertNotNullT(v: T?): T {
        assertNotNull(v)
        return v!!
    }
}
