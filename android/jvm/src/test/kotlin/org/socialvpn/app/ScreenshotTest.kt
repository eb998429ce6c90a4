package org.socialvpn.app

import android.app.Activity
import android.graphics.Bitmap
import android.graphics.Canvas
import android.os.Looper
import android.view.View
import android.widget.EditText
import android.widget.TextView
import org.junit.After
import org.junit.Assert.assertTrue
import org.junit.Before
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.Robolectric
import org.robolectric.RobolectricTestRunner
import org.robolectric.RuntimeEnvironment
import org.robolectric.Shadows.shadowOf
import org.robolectric.annotation.GraphicsMode
import org.socialvpn.core.Device
import org.socialvpn.core.Friend
import org.socialvpn.core.LinkState
import org.socialvpn.core.Status
import org.socialvpn.core.VpnState
import java.io.File

/**
 * Every screen rendered by Robolectric's native graphics from the real screen classes with
 * realistic data, light and dark, on a phone and a small phone, to PNG (the README shows the
 * committed copies in android/screenshots). A screen that renders blank, or a text wider or
 * taller than its view (cut off), fails.
 */
@RunWith(RobolectricTestRunner::class)
@GraphicsMode(GraphicsMode.Mode.NATIVE)
class ScreenshotTest {
    private val out = File(System.getProperty("screenshots.dir") ?: "target/screenshots").apply { mkdirs() }

    /** Screen size, then night mode, then density: the order Android's qualifiers take. */
    private enum class Size(val dp: String, val density: String, val label: String) {
        PHONE("w411dp-h891dp", "xxhdpi", "phone"),
        SMALL("w320dp-h569dp", "hdpi", "small"),
    }

    @Before
    fun setUp() {
        Platform.secretBox = { TestPlatform.box }
    }

    @After
    fun tearDown() = Session.endProcess()

    @Test
    fun `sign-in with an error`() = everywhere { size, dark ->
        val activity = Robolectric.buildActivity(MainActivity::class.java).setup().get()
        val screen = SignInScreen(activity, {}, {})
        activity.setContentView(screen.view)
        screen.jid.setText("alice@example.org")
        screen.password.setText("hunter22")
        screen.advancedShown = true
        screen.render(Snapshot(problem = Words.state(VpnState.AuthFailed)))
        shoot(activity, "sign-in", size, dark)
    }

    @Test
    fun `friends with requests, direct, relayed and offline rows`() = everywhere { size, dark ->
        val activity = Robolectric.buildActivity(MainActivity::class.java).setup().get()
        val screen = FriendsScreen(activity, NoActions, {}, {})
        activity.setContentView(screen.view)
        activity.title = "SocialVPN"
        screen.render(friendsSnapshot())
        shoot(activity, "friends", size, dark)
    }

    @Test
    fun `settings`() = everywhere { size, dark ->
        Session.get(RuntimeEnvironment.getApplication()).store.save(Account("alice@example.org", false), "secret")
        val activity = Robolectric.buildActivity(SettingsActivity::class.java).setup().get()
        shoot(activity, "settings", size, dark)
    }

    private fun everywhere(draw: (Size, Boolean) -> Unit) {
        for (size in Size.values()) for (dark in listOf(false, true)) {
            RuntimeEnvironment.setQualifiers("${size.dp}-${if (dark) "night" else "notnight"}-${size.density}")
            draw(size, dark)
            Session.endProcess()
        }
    }

    private fun shoot(activity: Activity, name: String, size: Size, dark: Boolean) {
        shadowOf(Looper.getMainLooper()).idle()
        val metrics = activity.resources.displayMetrics
        val (w, h) = metrics.widthPixels to metrics.heightPixels
        val root = activity.window.decorView
        root.measure(View.MeasureSpec.makeMeasureSpec(w, View.MeasureSpec.EXACTLY), View.MeasureSpec.makeMeasureSpec(h, View.MeasureSpec.EXACTLY))
        root.layout(0, 0, w, h)
        val bitmap = Bitmap.createBitmap(w, h, Bitmap.Config.ARGB_8888)
        root.draw(Canvas(bitmap))
        val file = File(out, "$name-${size.label}-${if (dark) "dark" else "light"}.png")
        file.outputStream().use { bitmap.compress(Bitmap.CompressFormat.PNG, 100, it) }
        assertNotBlank(bitmap, file)
        assertNothingCut(root, w, file)
    }

    /** More than a background: at least 2 % of the pixels differ from the corner's colour. */
    private fun assertNotBlank(bitmap: Bitmap, file: File) {
        val background = bitmap.getPixel(bitmap.width - 1, bitmap.height - 1)
        var differ = 0
        for (y in 0 until bitmap.height step 4) for (x in 0 until bitmap.width step 4) {
            if (bitmap.getPixel(x, y) != background) differ++
        }
        val sampled = (bitmap.width / 4) * (bitmap.height / 4)
        assertTrue("${file.name} is blank ($differ of $sampled differ)", differ * 50 > sampled)
    }

    /** Each shown text fits its view (no line wider or text taller than the room it has), and each view the screen. */
    private fun assertNothingCut(root: View, screenWidth: Int, file: File) {
        val problems = mutableListOf<String>()
        for (view in views(root).filterIsInstance<TextView>().filter { it.isShown && it.width > 0 }) {
            val layout = view.layout ?: continue
            val shown = view.text.ifEmpty { view.hint ?: "" }.toString()
            if (shown.isEmpty()) continue
            val room = view.width - view.totalPaddingLeft - view.totalPaddingRight
            if (view.text.isEmpty()) {
                // A hint has its own layout: measured whole (the fields are single lines).
                val wide = view.paint.measureText(shown)
                if (wide > room + 1) problems += "hint “$shown” is $wide px wide in $room px"
            } else {
                for (i in 0 until layout.lineCount) {
                    // Trailing spaces at a wrap take no room on screen.
                    val wide = view.paint.measureText(shown, layout.getLineStart(i), layout.getLineVisibleEnd(i))
                    if (wide > room + 1) problems += "“$shown” line $i is $wide px wide in $room px"
                }
            }
            if (view !is EditText && layout.height > view.height - view.totalPaddingTop - view.totalPaddingBottom + 1) {
                problems += "“$shown” is ${layout.height} px tall in ${view.height} px"
            }
            val at = IntArray(2).also { view.getLocationInWindow(it) }
            if (at[0] < 0 || at[0] + view.width > screenWidth) problems += "“$shown” leaves the screen (x ${at[0]}..${at[0] + view.width})"
        }
        assertTrue("${file.name}: ${problems.joinToString("; ")}", problems.isEmpty())
    }

    private object NoActions : FriendActions {
        override fun setEnabled(friend: Friend, enabled: Boolean) {}
        override fun accept(friend: Friend) {}
        override fun decline(friend: Friend) {}
        override fun showMenu(friend: Friend) {}
    }

    private fun device(resource: String, address: String?, link: LinkState, tx: ULong = 0u, rx: ULong = 0u, pinned: Boolean = false) =
        Device(resource = resource, socialvpn = true, uid = resource.hashCode().toString(16), overlayAddress = address, pinned = pinned, link = link, txBytes = tx, rxBytes = rx)

    private fun friend(jid: String, name: String?, devices: List<Device>, enabled: Boolean = true, pendingIn: Boolean = false, pendingOut: Boolean = false, mutual: Boolean = true, own: Boolean = false) =
        Friend(jid = jid, name = name, mutual = mutual, pendingIn = pendingIn, pendingOut = pendingOut, enabled = enabled, own = own, devices = devices)

    private fun friendsSnapshot() = Snapshot(
        phase = Phase.SIGNED_IN,
        jid = "alice@example.org",
        state = VpnState.Online,
        status = Status(uid = "4f1c", ipv4 = "100.64.0.1", ipv6 = "fd53:7670::1", subnet = "100.64.0.0/16", tunnel = true, xmpp = "online", txBytes = 48_318_000u, rxBytes = 312_004_000u, dropped = 0u),
        vpnOn = true,
        friends = listOf(
            friend("erin@jabber.example", "Erin", emptyList(), pendingIn = true, mutual = false),
            friend("bob@example.org", "Bob", listOf(
                device("pixel-8", "100.64.0.7", LinkState.Direct(12.4), 3_400_000u, 41_200_000u),
                device("laptop", "100.64.0.8", LinkState.Relayed(48.0), 220_000u, 180_000u, pinned = true),
            )),
            friend("carol@conversations.example", "Carol", listOf(device("phone", "100.64.0.9", LinkState.Connecting))),
            friend("dave@example.org", "Dave", listOf(device("desktop", "100.64.0.12", LinkState.None)), enabled = false),
            friend("frank@example.net", "Frank", emptyList()),
            friend("grace@example.com", null, emptyList(), pendingOut = true, mutual = false),
        ),
    )
}
