package org.socialvpn.app

import android.content.Context
import org.socialvpn.core.BrowserSignIn
import org.socialvpn.core.SignInException
import org.socialvpn.core.oauthBrowserSignIn
import org.socialvpn.core.oauthTokenFromRedirect

/**
 * "Sign in with browser": the server's authorization page opens in the browser and its
 * redirect (`org.socialvpn.app:/oauth`, the activity's intent filter) brings the token back.
 * The started sign-in is kept in private preferences, because Android may end the app while
 * the browser is in front; a redirect that belongs to no started sign-in is refused.
 */
class BrowserSignIns(private val context: Context) {
    private val prefs = context.getSharedPreferences("browser_sign_in", Context.MODE_PRIVATE)

    /** The URL to open, or why not. */
    fun start(form: SignInForm): Result<String> = try {
        val started = oauthBrowserSignIn(form.jid, null, REDIRECT_URI, null)
        prefs.edit()
            .putString(JID, form.jid).putString(SERVER, form.server).putString(CA_FILE, form.caFile)
            .putString(SUBNET, form.subnet)
            .putString(URL, started.url).putString(STATE, started.state)
            .putString(TOKEN_URL, started.tokenUrl).putString(CLIENT_ID, started.clientId)
            .putString(VERIFIER, started.codeVerifier)
            .commit()
        Result.success(started.url)
    } catch (e: SignInException) {
        Result.failure(IllegalStateException(Words.signIn(e)))
    }

    /**
     * Trades the redirect for a token off the UI thread (the code flow asks the server, up
     * to 20 s); [onToken] gets the account to sign in with.
     */
    fun finish(redirect: String, onError: (String) -> Unit, onToken: (Account, String) -> Unit) {
        val jid = prefs.getString(JID, null)
        val state = prefs.getString(STATE, null)
        if (jid == null || state == null) return onError("That sign-in was not started by this app; try again.")
        val started = BrowserSignIn(
            url = prefs.getString(URL, "") ?: "",
            state = state,
            redirectUri = REDIRECT_URI,
            tokenUrl = prefs.getString(TOKEN_URL, null),
            clientId = prefs.getString(CLIENT_ID, null),
            codeVerifier = prefs.getString(VERIFIER, null),
        )
        val account = Account(
            jid = jid,
            usesToken = true,
            server = prefs.getString(SERVER, "") ?: "",
            caFile = prefs.getString(CA_FILE, "") ?: "",
            subnet = prefs.getString(SUBNET, null) ?: SignInForm.DEFAULT_SUBNET,
        )
        Thread({
            PlatformTrust.init(context)
            try {
                val token = oauthTokenFromRedirect(
                    started, redirect, account.caFile.ifEmpty { null }, Platform.dnsServers(context),
                )
                // One redirect, one sign-in: a replayed redirect finds nothing started.
                prefs.edit().clear().commit()
                onToken(account, token.token)
            } catch (e: SignInException) {
                if (e !is SignInException.ForeignState) prefs.edit().clear().commit()
                onError(Words.signIn(e))
            }
        }, "socialvpn-oauth").start()
    }

    companion object {
        const val SCHEME = "org.socialvpn.app"
        const val REDIRECT_URI = "$SCHEME:/oauth"
        private const val JID = "jid"
        private const val SERVER = "server"
        private const val CA_FILE = "ca_file"
        private const val SUBNET = "subnet"
        private const val URL = "url"
        private const val STATE = "state"
        private const val TOKEN_URL = "token_url"
        private const val CLIENT_ID = "client_id"
        private const val VERIFIER = "code_verifier"
    }
}
