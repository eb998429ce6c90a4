package org.socialvpn.app

import android.Manifest
import android.app.Activity
import android.app.AlertDialog
import android.content.Intent
import android.content.pm.PackageManager
import android.net.VpnService
import android.os.Build
import android.os.Bundle
import android.util.Log
import android.view.Menu
import android.view.MenuItem
import android.widget.EditText
import android.widget.Toast
import org.socialvpn.core.Friend

/**
 * The app's one activity: the sign-in screen until an account is signed in, then the VPN
 * switch, status and friends. Everything shown comes from [Session] snapshots; every engine
 * call goes through the session's own thread.
 */
class MainActivity : Activity(), FriendActions {
    private lateinit var session: Session
    private var signIn: SignInScreen? = null
    private var friends: FriendsScreen? = null
    private val observer: (Snapshot) -> Unit = { render(it) }

    override fun onCreate(savedInstanceState: Bundle?) {
        Ui.applyTheme(this)
        super.onCreate(savedInstanceState)
        session = Session.get(this)
        session.resume()
        if (signedIn(session.snapshot)) showFriends() else showSignIn()
        signIn?.advancedShown = savedInstanceState?.getBoolean(ADVANCED) ?: false
        intent?.let(::handleRedirect)
    }

    override fun onNewIntent(intent: Intent) {
        super.onNewIntent(intent)
        handleRedirect(intent)
    }

    override fun onStart() {
        super.onStart()
        session.observe(observer)
        session.setVisible(true)
    }

    override fun onStop() {
        session.forget(observer)
        session.setVisible(false)
        super.onStop()
    }

    override fun onSaveInstanceState(outState: Bundle) {
        super.onSaveInstanceState(outState)
        signIn?.let { outState.putBoolean(ADVANCED, it.advancedShown) }
    }

    /** Signed in, or kept credentials the session is signing in with again. */
    private fun signedIn(snapshot: Snapshot) = snapshot.phase == Phase.SIGNED_IN || session.store.hasAccount()

    private fun render(snapshot: Snapshot) {
        when {
            friends == null && snapshot.phase == Phase.SIGNED_IN -> showFriends()
            signIn == null && !signedIn(snapshot) -> showSignIn()
        }
        signIn?.render(snapshot)
        friends?.render(snapshot)
        invalidateOptionsMenu()
    }

    private fun showSignIn() {
        friends = null
        val screen = SignInScreen(
            this,
            onSignIn = { form -> session.signIn(form.account(usesToken = false), Secret.Password(form.password)) },
            onBrowser = ::startBrowserSignIn,
        )
        signIn = screen
        setContentView(screen.view)
        title = "Sign in"
    }

    private fun showFriends() {
        signIn = null
        val screen = FriendsScreen(this, this, onVpnSwitch = ::switchVpn, onAddFriend = ::askForFriend)
        friends = screen
        setContentView(screen.view)
        title = "SocialVPN"
    }

    override fun onCreateOptionsMenu(menu: Menu): Boolean {
        if (friends != null) menu.add(0, MENU_SETTINGS, 0, "Settings")
        return true
    }

    override fun onOptionsItemSelected(item: MenuItem): Boolean {
        if (item.itemId != MENU_SETTINGS) return super.onOptionsItemSelected(item)
        startActivity(Intent(this, SettingsActivity::class.java))
        return true
    }

    // --- the VPN switch ---

    private fun switchVpn(on: Boolean) {
        Log.i(TAG, "VPN switch: $on")
        if (!on) return SocialVpnService.disconnect(this)
        if (Build.VERSION.SDK_INT >= 33 && checkSelfPermission(Manifest.permission.POST_NOTIFICATIONS) != PackageManager.PERMISSION_GRANTED) {
            // The VPN runs without it; the notification with its disconnect action needs it.
            requestPermissions(arrayOf(Manifest.permission.POST_NOTIFICATIONS), REQUEST_NOTIFICATIONS)
        }
        val consent = VpnService.prepare(this)
        Log.i(TAG, "VPN consent needed: ${consent != null}")
        if (consent != null) startActivityForResult(consent, REQUEST_VPN) else SocialVpnService.connect(this)
    }

    @Deprecated("Activity results without AndroidX")
    override fun onActivityResult(requestCode: Int, resultCode: Int, data: Intent?) {
        super.onActivityResult(requestCode, resultCode, data)
        if (requestCode != REQUEST_VPN) return
        if (resultCode == RESULT_OK) {
            SocialVpnService.connect(this)
        } else {
            session.tunnelChanged(false, "SocialVPN needs your permission to set up a VPN connection.")
        }
    }

    // --- friends ---

    private fun failed(words: String) {
        Toast.makeText(this, words, Toast.LENGTH_LONG).show()
    }

    override fun setEnabled(friend: Friend, enabled: Boolean) =
        session.act(::failed) { it.setFriendEnabled(friend.jid, enabled) }

    override fun accept(friend: Friend) = session.act(::failed) { it.acceptFriend(friend.jid) }

    override fun decline(friend: Friend) = session.act(::failed) { it.declineFriend(friend.jid) }

    private fun askForFriend() {
        val input = EditText(this).apply { id = Ids.DIALOG_INPUT; hint = "friend@example.org"; isSingleLine = true }
        AlertDialog.Builder(this)
            .setTitle("Add a friend")
            .setMessage("They get a request and appear here once they accept.")
            .setView(input)
            .setPositiveButton("Ask") { _, _ ->
                val jid = input.text.toString().trim()
                session.act(::failed) { it.addFriend(jid) }
            }
            .setNegativeButton("Cancel", null)
            .show()
    }

    override fun showMenu(friend: Friend) {
        val devices = friend.devices.filter { it.socialvpn && it.uid != null }
        val labels = devices.map { d ->
            if (d.pinned) "Unpin ${d.resource} (${d.overlayAddress})" else "Pin an address for ${d.resource}"
        } + if (friend.own) emptyList() else listOf("Remove ${name(friend)}")
        AlertDialog.Builder(this)
            .setTitle(name(friend))
            .setItems(labels.toTypedArray()) { _, which ->
                val device = devices.getOrNull(which)
                when {
                    device == null -> confirmRemove(friend)
                    device.pinned -> session.act(::failed) { it.unpinAddress(device.uid!!) }
                    else -> askForAddress(device.uid!!, device.resource, device.overlayAddress)
                }
            }
            .show()
    }

    private fun askForAddress(uid: String, resource: String, current: String?) {
        val input = EditText(this).apply { id = Ids.DIALOG_INPUT; setText(current ?: ""); isSingleLine = true }
        AlertDialog.Builder(this)
            .setTitle("Address of $resource")
            .setMessage("This device keeps this address in your network, across restarts.")
            .setView(input)
            .setPositiveButton("Pin") { _, _ ->
                val address = input.text.toString().trim()
                session.act(::failed) { it.pinAddress(uid, address) }
            }
            .setNegativeButton("Cancel", null)
            .show()
    }

    private fun confirmRemove(friend: Friend) {
        AlertDialog.Builder(this)
            .setTitle("Remove ${name(friend)}?")
            .setMessage("You leave each other's contact lists and your devices unlink.")
            .setPositiveButton("Remove") { _, _ -> session.act(::failed) { it.removeFriend(friend.jid) } }
            .setNegativeButton("Cancel", null)
            .show()
    }

    // --- sign-in with the browser ---

    private fun startBrowserSignIn(form: SignInForm) {
        val result = BrowserSignIns(this).start(form)
        result.onFailure { e -> signIn?.show(e.message ?: "Browser sign-in failed.") }
        result.onSuccess { url ->
            try {
                startActivity(Intent(Intent.ACTION_VIEW, android.net.Uri.parse(url)))
            } catch (e: android.content.ActivityNotFoundException) {
                signIn?.show("No browser is installed to sign in with.")
            }
        }
    }

    private fun handleRedirect(intent: Intent) {
        val uri = intent.data ?: return
        if (uri.scheme != BrowserSignIns.SCHEME) return
        setIntent(Intent(this, MainActivity::class.java))
        BrowserSignIns(this).finish(uri.toString(), onError = { words -> runOnUiThread { signIn?.show(words) } }) { account, token ->
            session.signIn(account, Secret.Token(token))
        }
    }

    private companion object {
        const val TAG = "SocialVPN"
        const val ADVANCED = "advanced"
        const val MENU_SETTINGS = 1
        const val REQUEST_VPN = 1
        const val REQUEST_NOTIFICATIONS = 2
    }
}

/** The stored account this form signs in as. */
fun SignInForm.account(usesToken: Boolean) = Account(
    jid = jid.trim(),
    usesToken = usesToken,
    server = server.trim(),
    caFile = caFile.trim(),
    subnet = subnet.trim(),
)
