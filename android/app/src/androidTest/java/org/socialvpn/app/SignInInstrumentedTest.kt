package org.socialvpn.app

import android.widget.ListView
import androidx.test.core.app.ActivityScenario
import androidx.test.ext.junit.runners.AndroidJUnit4
import androidx.test.platform.app.InstrumentationRegistry
import androidx.test.uiautomator.By
import androidx.test.uiautomator.UiDevice
import androidx.test.uiautomator.Until
import org.junit.Assert.assertNotNull
import org.junit.Assume.assumeTrue
import org.junit.Test
import org.junit.runner.RunWith

/**
 * On an emulator or phone, against a real XMPP account given as instrumentation arguments:
 *   ./gradlew connectedAndroidTest -Pandroid.testInstrumentationRunnerArguments.jid=alice@example.org \
 *     -Pandroid.testInstrumentationRunnerArguments.password=… \
 *     -Pandroid.testInstrumentationRunnerArguments.friend=bob@example.org
 * Signs in by typing, sees the friend in the list, and switches them off and on again.
 */
@RunWith(AndroidJUnit4::class)
class SignInInstrumentedTest {
    private val args = InstrumentationRegistry.getArguments()
    private val device = UiDevice.getInstance(InstrumentationRegistry.getInstrumentation())

    @Test
    fun signInSeeAFriendAndToggleThem() {
        val jid = args.getString("jid")
        val password = args.getString("password")
        val friend = args.getString("friend")
        assumeTrue("pass jid, password and friend as instrumentation arguments", jid != null && password != null && friend != null)
        ActivityScenario.launch(MainActivity::class.java).use { scenario ->
            device.wait(Until.findObject(By.res("android", "content")), 5_000)
            scenario.onActivity { activity ->
                activity.findViewById<android.widget.EditText>(Ids.JID).setText(jid)
                activity.findViewById<android.widget.EditText>(Ids.PASSWORD).setText(password)
                activity.findViewById<android.widget.Button>(Ids.SIGN_IN).performClick()
            }
            assertNotNull("the friend in the list", device.wait(Until.findObject(By.textContains(friend!!)), 60_000))
            val toggle = device.wait(Until.findObject(By.descContains(friend)), 10_000)
            assertNotNull("the friend's switch", toggle)
            val before = toggle.isChecked
            toggle.click()
            assertNotNull(device.wait(Until.findObject(By.descContains(friend).checked(!before)), 10_000))
            toggle.click()
            assertNotNull(device.wait(Until.findObject(By.descContains(friend).checked(before)), 10_000))
            scenario.onActivity { activity -> assertNotNull(activity.findViewById<ListView>(Ids.FRIENDS)) }
        }
    }
}
