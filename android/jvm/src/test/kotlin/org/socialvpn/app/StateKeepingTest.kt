package org.socialvpn.app

import android.os.Bundle
import android.widget.Button
import android.widget.EditText
import org.junit.After
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Before
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.Robolectric
import org.robolectric.RobolectricTestRunner
import org.robolectric.RuntimeEnvironment

/**
 * What the user typed survives rotation and process death; the stored secret is sealed, and
 * a secret that no longer opens reads as signed out instead of crashing.
 */
@RunWith(RobolectricTestRunner::class)
class StateKeepingTest {
    @Before
    fun setUp() {
        Platform.secretBox = { TestPlatform.box }
    }

    @After
    fun tearDown() = Session.endProcess()

    private fun typeInto(activity: MainActivity) {
        activity.findViewById<EditText>(Ids.JID).setText("alice@example.org")
        activity.findViewById<EditText>(Ids.PASSWORD).setText("hunter22")
        activity.findViewById<Button>(Ids.ADVANCED).performClick()
        activity.findViewById<EditText>(Ids.SERVER).setText("xmpp.example.org:5222")
    }

    private fun assertTyped(activity: MainActivity) {
        assertEquals("alice@example.org", activity.findViewById<EditText>(Ids.JID).text.toString())
        assertEquals("hunter22", activity.findViewById<EditText>(Ids.PASSWORD).text.toString())
        assertEquals("xmpp.example.org:5222", activity.findViewById<EditText>(Ids.SERVER).text.toString())
        assertTrue("advanced still open", activity.findViewById<EditText>(Ids.SERVER).isShown)
    }

    @Test
    fun `rotation keeps the sign-in form`() {
        val controller = Robolectric.buildActivity(MainActivity::class.java).setup()
        typeInto(controller.get())
        RuntimeEnvironment.setQualifiers("+land")
        controller.recreate()
        assertTyped(controller.get())
    }

    @Test
    fun `process death keeps the sign-in form`() {
        val controller = Robolectric.buildActivity(MainActivity::class.java).setup()
        typeInto(controller.get())
        val saved = Bundle()
        controller.pause().stop().saveInstanceState(saved).destroy()
        Session.endProcess()
        val again = Robolectric.buildActivity(MainActivity::class.java).setup(saved).get()
        assertTyped(again)
    }

    @Test
    fun `a form with mistakes says what is wrong and tries nothing`() {
        val activity = Robolectric.buildActivity(MainActivity::class.java).setup().get()
        activity.findViewById<EditText>(Ids.JID).setText("alice")
        activity.findViewById<Button>(Ids.SIGN_IN).performClick()
        assertEquals("An XMPP address looks like alice@example.org.", activity.findViewById<EditText>(Ids.JID).error)
        assertEquals("Enter your password.", activity.findViewById<EditText>(Ids.PASSWORD).error)
        assertEquals(Phase.SIGNED_OUT, Session.get(activity).snapshot.phase)
    }

    @Test
    fun `a sign-in redirect the app did not start is refused in words`() {
        val redirect = android.content.Intent(android.content.Intent.ACTION_VIEW, android.net.Uri.parse("org.socialvpn.app:/oauth#access_token=stolen&state=forged"))
        val activity = Robolectric.buildActivity(MainActivity::class.java, redirect).setup().get()
        waitOnMain(10, "the refusal") {
            activity.findViewById<android.widget.TextView>(Ids.PROBLEM).text.toString().takeIf { it.isNotEmpty() }
        }.let { assertEquals("That sign-in was not started by this app; try again.", it) }
        assertEquals(Phase.SIGNED_OUT, Session.get(activity).snapshot.phase)
    }

    @Test
    fun `the secret is stored sealed and a lost key reads as signed out`() {
        val app = RuntimeEnvironment.getApplication()
        val store = AccountStore(app, TestPlatform.box)
        store.save(Account("alice@example.org", usesToken = false), "correct horse battery staple")
        val file = app.getSharedPreferences("account", 0).all.values.joinToString(" ")
        assertFalse("the secret in the clear: $file", file.contains("correct horse"))
        assertEquals("correct horse battery staple", store.load()!!.second)
        // Another key (the Keystore wiped, a backup restored elsewhere): signed out, no crash.
        val elsewhere = AccountStore(app, SoftwareSecretBox())
        assertNull(elsewhere.load())
        // A corrupted value: the same.
        app.getSharedPreferences("account", 0).edit().putString("secret_sealed", "not base64 !!").commit()
        assertNull(store.load())
        assertEquals("alice@example.org", store.lastJid())
    }
}
