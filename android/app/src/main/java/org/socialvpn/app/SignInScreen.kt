package org.socialvpn.app

import android.app.Activity
import android.text.InputType
import android.view.View
import android.widget.Button
import android.widget.EditText
import android.widget.LinearLayout
import android.widget.ProgressBar
import android.widget.ScrollView
import android.widget.TextView
import org.socialvpn.app.Ui.column
import org.socialvpn.app.Ui.dp
import org.socialvpn.app.Ui.label
import org.socialvpn.app.Ui.row
import org.socialvpn.app.Ui.shown
import org.socialvpn.app.Ui.wide

/**
 * The sign-in screen: XMPP address and password, "Sign in with browser" (OAuth), and the
 * advanced overrides (server, CA file, subnet). Problems show in words under the form.
 * Fields have fixed ids, so Android keeps what was typed across rotation and process death.
 */
class SignInScreen(
    private val activity: Activity,
    private val onSignIn: (SignInForm) -> Unit,
    private val onBrowser: (SignInForm) -> Unit,
) {
    val jid = field(Ids.JID, "XMPP address (alice@example.org)", InputType.TYPE_TEXT_VARIATION_EMAIL_ADDRESS)
    val password = field(Ids.PASSWORD, "Password", InputType.TYPE_TEXT_VARIATION_PASSWORD)
    val server = field(Ids.SERVER, "Server (host:port)", InputType.TYPE_TEXT_VARIATION_URI)
    val caFile = field(Ids.CA_FILE, "CA certificate file", InputType.TYPE_TEXT_VARIATION_URI)
    val subnet = field(Ids.SUBNET, "Subnet for friends' devices", InputType.TYPE_TEXT_VARIATION_URI)
        .apply { setText(SignInForm.DEFAULT_SUBNET) }
    val signIn = Button(activity).apply { id = Ids.SIGN_IN; text = "Sign in" }
    val browser = Button(activity).apply { id = Ids.BROWSER; text = "Sign in with browser" }
    val advancedToggle = Button(activity, null, android.R.attr.borderlessButtonStyle).apply { id = Ids.ADVANCED }
    private val advanced = LinearLayout(activity).apply { orientation = LinearLayout.VERTICAL }
    val problem: TextView = activity.label().apply {
        id = Ids.PROBLEM
        setTextColor(activity.getColor(android.R.color.holo_red_dark))
    }
    private val progress = ProgressBar(activity).apply { isIndeterminate = true }
    private val progressRow = activity.row().apply {
        addView(progress, LinearLayout.LayoutParams(activity.dp(24), activity.dp(24)))
        addView(activity.label("Signing in…").apply { setPadding(activity.dp(12), 0, 0, 0) })
    }

    var advancedShown = false
        set(value) {
            field = value
            advanced.shown(value)
            advancedToggle.text = if (value) "Hide advanced settings" else "Advanced settings"
        }

    val view: View = ScrollView(activity).apply {
        id = Ids.SIGN_IN_SCROLL
        isFillViewport = true
        val form = activity.column(24)
        form.addView(activity.label("SocialVPN", Ui.Style.TITLE))
        form.addView(
            activity.label("Sign in with your XMPP account. Friends from your contact list appear in your own private network.", Ui.Style.DETAIL),
            activity.wide(4),
        )
        form.addView(jid, activity.wide(16))
        form.addView(password, activity.wide(8))
        form.addView(signIn, activity.wide(16))
        form.addView(browser, activity.wide(4))
        form.addView(progressRow, activity.wide(12))
        form.addView(problem, activity.wide(12))
        form.addView(advancedToggle, activity.wide(12))
        advanced.addView(
            activity.label(
                "Leave the server empty: it is found from your address. A CA file is only for servers " +
                    "with their own certificate authority. Friends' devices get addresses in the subnet.",
                Ui.Style.DETAIL,
            ),
            activity.wide(0),
        )
        advanced.addView(server, activity.wide(8))
        advanced.addView(caFile, activity.wide(8))
        advanced.addView(subnet, activity.wide(8))
        form.addView(advanced, activity.wide(0))
        addView(form)
    }

    init {
        advancedShown = false
        advancedToggle.setOnClickListener { advancedShown = !advancedShown }
        signIn.setOnClickListener { submit(needsPassword = true)?.let(onSignIn) }
        browser.setOnClickListener { submit(needsPassword = false)?.let(onBrowser) }
    }

    fun form() = SignInForm(
        jid = jid.text.toString().trim(),
        password = password.text.toString(),
        server = server.text.toString().trim(),
        caFile = caFile.text.toString().trim(),
        subnet = subnet.text.toString().trim(),
    )

    /** The form when it can be tried; else its problems are shown next to their fields. */
    private fun submit(needsPassword: Boolean): SignInForm? {
        val form = form()
        val problems = form.problems(needsPassword)
        for (f in listOf(jid, password, server, subnet)) f.error = null
        for (p in problems) {
            val field = when (p.field) {
                SignInForm.Field.JID -> jid
                SignInForm.Field.PASSWORD -> password
                SignInForm.Field.SERVER -> server
                SignInForm.Field.SUBNET -> subnet
            }
            field.error = p.words
            if (p.field == SignInForm.Field.SERVER || p.field == SignInForm.Field.SUBNET) advancedShown = true
        }
        problem.text = problems.firstOrNull()?.words ?: ""
        return form.takeIf { problems.isEmpty() }
    }

    fun render(snapshot: Snapshot) {
        val busy = snapshot.phase == Phase.SIGNING_IN
        progressRow.shown(busy)
        signIn.isEnabled = !busy
        browser.isEnabled = !busy
        if (!busy && snapshot.problem != null) problem.text = snapshot.problem
        if (busy) problem.text = ""
        if (jid.text.isEmpty() && snapshot.jid.isNotEmpty()) jid.setText(snapshot.jid)
    }

    /** Words from outside the snapshot (the browser sign-in's own failures). */
    fun show(words: String) {
        problem.text = words
    }

    private fun field(id: Int, hint: String, variation: Int) = EditText(activity).apply {
        this.id = id
        this.hint = hint
        isSingleLine = true
        inputType = InputType.TYPE_CLASS_TEXT or variation
    }
}
