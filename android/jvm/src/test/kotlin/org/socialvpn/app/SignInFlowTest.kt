package org.socialvpn.app

import android.app.AlertDialog
import android.content.Intent
import android.widget.Button
import android.widget.EditText
import android.widget.ListView
import android.widget.Switch
import android.widget.TextView
import org.junit.After
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Before
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.Robolectric
import org.robolectric.RobolectricTestRunner
import org.robolectric.RuntimeEnvironment
import org.robolectric.Shadows.shadowOf
import org.robolectric.shadows.ShadowDialog
import org.socialvpn.core.LinkState
import org.socialvpn.core.World

/**
 * The app as a user drives it, on the real core inside the namespace world (prosody or
 * ejabberd, found by SRV records; carol is a Rust peer running `socialvpn up`):
 * a wrong password says so in words; the right one shows the roster with carol's and dave's
 * requests, dave's declined and carol's accepted from the list, after which she is linked; the
 * VPN switch starts the service, whose own code hands a tunnel to the engine, and pings
 * cross it both ways; the friend's switch turns her off and she can no longer ping; a friend
 * added from the dialog shows as waiting.
 */
@RunWith(RobolectricTestRunner::class)
@org.robolectric.annotation.Config(qualifiers = "w411dp-h891dp")
class SignInFlowTest {
    private val user = "mia"
    private val jid = World.get("$user.jid")
    private val carol = World.get("peer.jid")
    private val dave = World.get("requester.jid")

    @Before
    fun setUp() = TestPlatform.install("svpn-si")

    @After
    fun tearDown() {
        org.robolectric.shadows.ShadowVpnService.reset()
        Session.endProcess()
    }

    @Test
    fun `sign in, accept a request, add a friend, carry traffic and switch her off`() {
        val activity = Robolectric.buildActivity(MainActivity::class.java).setup().get()
        // Typed as a user would: the address, a wrong password, the world's CA under Advanced.
        activity.findViewById<Button>(Ids.ADVANCED).performClick()
        activity.findViewById<EditText>(Ids.JID).setText(jid)
        activity.findViewById<EditText>(Ids.PASSWORD).setText("not-" + World.get("$user.password"))
        activity.findViewById<EditText>(Ids.CA_FILE).setText(World.get("ca.file"))
        activity.findViewById<Button>(Ids.SIGN_IN).performClick()
        val words = waitOnMain(40, "the wrong password in words") {
            activity.findViewById<TextView>(Ids.PROBLEM)?.text?.toString()?.takeIf { it.isNotEmpty() }
        }
        assertEquals("Wrong address or password. Check them and sign in again.", words)
        assertTrue("still the sign-in screen", activity.findViewById<Button>(Ids.SIGN_IN) != null)

        activity.findViewById<EditText>(Ids.PASSWORD).setText(World.get("$user.password"))
        activity.findViewById<Button>(Ids.SIGN_IN).performClick()
        val list = waitOnMain(40, "the friends screen") { activity.findViewById<ListView>(Ids.FRIENDS) }
        // carol and dave asked before mia ever signed in: both requests are in the list.
        fun requestButton(from: String, label: String) = waitOnMain(30, "$from's request row") {
            rowView<FriendAdapter.RequestView>(list) { it is Row.Request && it.friend.jid == from }
                ?.let { row -> views(row).filterIsInstance<Button>().first { it.text == label } }
        }
        requestButton(dave, "Decline").performClick()
        waitOnMain(30, "dave's request gone") {
            Session.get(activity).snapshot.takeIf { s -> s.friends.none { it.jid == dave && it.pendingIn } }
        }
        requestButton(carol, "Accept").performClick()
        val device = waitOnMain(60, "carol a friend, her device linked") {
            Session.get(activity).snapshot.friends.firstOrNull { it.jid == carol && it.mutual }
                ?.devices?.firstOrNull { it.overlayAddress != null && it.link.isUp() }
        }
        assertTrue(Session.get(activity).store.hasAccount())
        val carolAddress = device.overlayAddress!!
        val row = waitOnMain(10, "carol's row on screen") {
            rowView<FriendAdapter.PersonView>(list) { it is Row.Person && it.friend.jid == carol }
        }
        val rowText = views(row).filterIsInstance<TextView>().joinToString(" | ") { it.text }
        assertTrue(rowText, rowText.contains(carolAddress) && (rowText.contains("Direct") || rowText.contains("Relayed")))

        // The VPN switch: Android's consent dialog first; granted, the service starts.
        activity.findViewById<Switch>(Ids.VPN_SWITCH).performClick()
        val consent = shadowOf(activity).nextStartedActivityForResult
        assertTrue("the consent dialog was not asked for", consent != null)
        assertEquals(null, shadowOf(RuntimeEnvironment.getApplication()).peekNextStartedService())
        // The user taps OK: from now on Android's prepare() answers null, and the app hears RESULT_OK.
        org.robolectric.shadows.ShadowVpnService.setPrepareResult(null)
        shadowOf(activity).receiveResult(consent.intent, android.app.Activity.RESULT_OK, null)
        val start = shadowOf(RuntimeEnvironment.getApplication()).nextStartedService
        assertEquals(SocialVpnService.ACTION_CONNECT, start.action)
        val service = Robolectric.buildService(SocialVpnService::class.java, start).create().startCommand(0, 1).get()
        waitOnMain(30, "the VPN on") { Session.get(activity).snapshot.takeIf { it.vpnOn } }
        assertTrue(activity.findViewById<Switch>(Ids.VPN_SWITCH).isChecked)
        val (ok, out) = World.run("ping", "-c", "3", "-i", "0.2", "-W", "2", "-w", "15", carolAddress)
        assertTrue(out, ok)
        val mine = waitOnMain(20, "mia's address in carol's network") { addressAtPeer() }
        val (back, backOut) = World.runAtPeer("ping", "-c", "2", "-i", "0.2", "-W", "2", "-w", "10", mine)
        assertTrue(backOut, back)

        // Her switch, off: the link closes and carol can no longer ping.
        // (Re-found: the list may have rebound its row views since.)
        val carolRow = waitOnMain(10, "carol's row") { rowView<FriendAdapter.PersonView>(list) { it is Row.Person && it.friend.jid == carol } }
        val toggle = views(carolRow).filterIsInstance<Switch>().first()
        assertTrue(toggle.isChecked)
        toggle.performClick()
        waitOnMain(20, "carol switched off") {
            Session.get(activity).snapshot.friends.firstOrNull { it.jid == carol && !it.enabled }
        }
        waitOnMain(20, "carol's link closed") {
            Session.get(activity).snapshot.friends.firstOrNull { it.jid == carol }
                ?.takeIf { f -> f.devices.none { it.link.isUp() } }
        }
        val (after, afterOut) = World.runAtPeer("ping", "-c", "2", "-i", "0.3", "-W", "1", mine)
        assertFalse("carol still reaches mia: $afterOut", after)

        // Add a friend from the dialog: noah gets the request, the list shows her waiting.
        val noah = World.get("noah.jid")
        activity.findViewById<Button>(Ids.ADD_FRIEND).performClick()
        val dialog = ShadowDialog.getLatestDialog() as AlertDialog
        dialog.findViewById<EditText>(Ids.DIALOG_INPUT).setText(noah)
        dialog.getButton(AlertDialog.BUTTON_POSITIVE).performClick()
        val asked = waitOnMain(30, "noah asked, shown as waiting") {
            rowView<FriendAdapter.PersonView>(list) { it is Row.Person && it.friend.jid == noah }
        }
        val askedText = views(asked).filterIsInstance<TextView>().joinToString(" | ") { it.text }
        assertTrue(askedText, askedText.contains("waiting for them to accept"))

        // The notification's disconnect action ends the VPN; the account stays online.
        service.onStartCommand(Intent(service, SocialVpnService::class.java).setAction(SocialVpnService.ACTION_DISCONNECT), 0, 2)
        waitOnMain(20, "the VPN off") { Session.get(activity).snapshot.takeIf { !it.vpnOn } }
        assertFalse(activity.findViewById<Switch>(Ids.VPN_SWITCH).isChecked)
        assertTrue(shadowOf(service).isStoppedBySelf)
        assertTrue(Session.get(activity).snapshot.state is org.socialvpn.core.VpnState.Online)

        // A long press on carol: pin her device at an address of mia's choosing.
        val pinned = "100.64.0.77"
        waitOnMain(10, "carol's row") { rowView<FriendAdapter.PersonView>(list) { it is Row.Person && it.friend.jid == carol } }
            .performLongClick()
        shadowOf(ShadowDialog.getLatestDialog() as AlertDialog).clickOnItem(0)
        val pin = ShadowDialog.getLatestDialog() as AlertDialog
        pin.findViewById<EditText>(Ids.DIALOG_INPUT).setText(pinned)
        pin.getButton(AlertDialog.BUTTON_POSITIVE).performClick()
        waitOnMain(20, "carol's device pinned at $pinned") {
            Session.get(activity).snapshot.friends.firstOrNull { it.jid == carol }
                ?.devices?.firstOrNull { it.pinned && it.overlayAddress == pinned }
        }

        // A long press on noah: remove her, confirmed.
        waitOnMain(10, "noah's row") { rowView<FriendAdapter.PersonView>(list) { it is Row.Person && it.friend.jid == noah } }
            .performLongClick()
        shadowOf(ShadowDialog.getLatestDialog() as AlertDialog).clickOnItem(0)
        (ShadowDialog.getLatestDialog() as AlertDialog).getButton(AlertDialog.BUTTON_POSITIVE).performClick()
        waitOnMain(30, "noah gone") { Session.get(activity).snapshot.takeIf { s -> s.friends.none { it.jid == noah } } }

        // Sign out from settings: the secret is forgotten, the sign-in screen offers the address again.
        Robolectric.buildActivity(SettingsActivity::class.java).setup().get()
            .findViewById<Button>(Ids.SIGN_OUT).performClick()
        waitOnMain(20, "signed out") { Session.get(activity).snapshot.takeIf { it.phase == Phase.SIGNED_OUT } }
        assertFalse(Session.get(activity).store.hasAccount())
        val jidField = waitOnMain(10, "the sign-in screen") { activity.findViewById<EditText>(Ids.JID) }
        assertEquals(jid, jidField.text.toString())
    }

    /** The address carol's daemon gave mia's device (from `socialvpn status` at carol). */
    private fun addressAtPeer(): String? {
        val status = World.peer("status")
        return status.lines().firstOrNull { it.contains(jid) }
            ?.let { Regex("""100\.\d+\.\d+\.\d+""").find(it)?.value }
    }
}
