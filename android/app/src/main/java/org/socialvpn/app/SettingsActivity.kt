package org.socialvpn.app

import android.app.Activity
import android.os.Bundle
import android.widget.Button
import android.widget.RadioButton
import android.widget.RadioGroup
import android.widget.ScrollView
import org.socialvpn.app.Ui.column
import org.socialvpn.app.Ui.label
import org.socialvpn.app.Ui.wide
import org.socialvpn.core.LogLevel
import org.socialvpn.core.setLogLevel

/** Link policy, log level, sign out. */
class SettingsActivity : Activity() {
    override fun onCreate(savedInstanceState: Bundle?) {
        Ui.applyTheme(this)
        super.onCreate(savedInstanceState)
        title = "Settings"
        val session = Session.get(this)
        val prefs = session.store.preferences
        val page = column(16)

        page.addView(label("Links", Ui.Style.HEADING))
        val policy = RadioGroup(this).apply { id = Ids.POLICY }
        policy.addView(RadioButton(this).apply { id = Ids.POLICY_PROACTIVE; text = "Link to every friend's device that is online" })
        policy.addView(RadioButton(this).apply { id = Ids.POLICY_ON_DEMAND; text = "Link only when I send them traffic (saves battery with many friends)" })
        policy.check(if (prefs.onDemand) Ids.POLICY_ON_DEMAND else Ids.POLICY_PROACTIVE)
        policy.setOnCheckedChangeListener { _, checked ->
            session.store.preferences = session.store.preferences.copy(onDemand = checked == Ids.POLICY_ON_DEMAND)
        }
        page.addView(policy, wide(4))
        page.addView(label("Applies from the next sign-in or app start.", Ui.Style.DETAIL), wide(2))

        page.addView(label("Log level", Ui.Style.HEADING), wide(24))
        val levels = listOf(LogLevel.ERROR to "Errors only", LogLevel.WARN to "Warnings (default)", LogLevel.INFO to "Info", LogLevel.DEBUG to "Debug — includes addresses and contacts")
        val logLevel = RadioGroup(this).apply { id = Ids.LOG_LEVEL }
        levels.forEachIndexed { i, (level, words) ->
            logLevel.addView(RadioButton(this).apply { id = Ids.LOG_LEVEL + 0x100 + i; text = words; tag = level })
        }
        val current = levels.indexOfFirst { it.first.name == prefs.logLevel }.coerceAtLeast(1)
        logLevel.check(Ids.LOG_LEVEL + 0x100 + current)
        logLevel.setOnCheckedChangeListener { group, checked ->
            val level = group.findViewById<RadioButton>(checked)?.tag as? LogLevel ?: return@setOnCheckedChangeListener
            session.store.preferences = session.store.preferences.copy(logLevel = level.name)
            Thread { setLogLevel(level) }.start()
        }
        page.addView(logLevel, wide(4))

        page.addView(label("Account", Ui.Style.HEADING), wide(24))
        page.addView(label(session.store.lastJid()), wide(4))
        page.addView(
            Button(this).apply {
                id = Ids.SIGN_OUT
                text = "Sign out"
                setOnClickListener {
                    SocialVpnService.disconnect(this@SettingsActivity)
                    session.signOut()
                    finish()
                }
            },
            wide(8),
        )
        setContentView(ScrollView(this).apply { addView(page) })
    }

    override fun onStart() {
        super.onStart()
        Session.get(this).setVisible(true)
    }

    override fun onStop() {
        Session.get(this).setVisible(false)
        super.onStop()
    }
}
