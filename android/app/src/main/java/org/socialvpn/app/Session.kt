package org.socialvpn.app

import android.content.Context
import android.os.Handler
import android.os.Looper
import android.util.Log
import org.socialvpn.core.LinkEvent
import org.socialvpn.core.LinkPolicyConfig
import org.socialvpn.core.LogLevel
import org.socialvpn.core.SignIn
import org.socialvpn.core.SocialVpn
import org.socialvpn.core.SocketProtector
import org.socialvpn.core.VpnConfig
import org.socialvpn.core.VpnEventListener
import org.socialvpn.core.VpnException
import org.socialvpn.core.VpnState
import org.socialvpn.core.setLogLevel
import java.io.File
import java.util.concurrent.Callable
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.Executors
import java.util.concurrent.RejectedExecutionException
import java.util.concurrent.ScheduledFuture
import java.util.concurrent.TimeUnit
import java.util.concurrent.atomic.AtomicBoolean

/** The secret a sign-in uses. */
sealed class Secret(val value: String) {
    class Password(value: String) : Secret(value)
    class Token(value: String) : Secret(value)
}

/**
 * The signed-in engine of this process and what the screens show of it.
 *
 * One thread ("socialvpn-calls") owns the engine: every call into it runs there, so the UI
 * thread never blocks on the engine and the engine is never called from two places at once.
 * Engine events arrive on the engine's own thread, are turned into a [Snapshot] on the calls
 * thread and handed to observers on the main thread.
 */
class Session private constructor(private val app: Context) {
    val store = AccountStore(app, Platform.secretBox())
    private val calls = Executors.newSingleThreadScheduledExecutor { r ->
        Thread(r, "socialvpn-calls").apply { isDaemon = true }
    }
    private val main = Handler(Looper.getMainLooper())
    private val observers = CopyOnWriteArrayList<(Snapshot) -> Unit>()

    /** The latest snapshot; read and replaced on the main thread only. */
    var snapshot = Snapshot(jid = store.lastJid())
        private set

    // Owned by the calls thread.
    private var vpn: SocialVpn? = null
    private var phase = Phase.SIGNED_OUT
    private var pending: Pair<Account, Secret>? = null
    private var generation = 0
    private var ticker: ScheduledFuture<*>? = null
    private var foreground = false

    private val refreshQueued = AtomicBoolean(false)

    /** Main thread: [observer] gets the current snapshot now and every new one. */
    fun observe(observer: (Snapshot) -> Unit) {
        observers += observer
        observer(snapshot)
    }

    fun forget(observer: (Snapshot) -> Unit) {
        observers -= observer
    }

    /** Signs in with what the sign-in screen collected; stored once the server said yes. */
    fun signIn(account: Account, secret: Secret) = calls.execute {
        stopEngine()
        start(account, secret, Phase.SIGNING_IN)
    }

    /**
     * Signs in from the stored account if no engine runs (process restart, always-on start).
     * Blocks: for the service's worker thread, never the UI thread. False: nothing stored.
     */
    fun resumeBlocking(): Boolean = calls.submit(Callable { startFromStore() }).get()

    /** Like [resumeBlocking] without waiting: for screens opened after the process restarted. */
    fun resume() = calls.execute { startFromStore() }

    /** Calls thread: the engine runs, or starts now from the stored account (false: none stored). */
    private fun startFromStore(): Boolean {
        if (vpn != null) return true
        val (account, secret) = store.load() ?: return false
        start(account, if (account.usesToken) Secret.Token(secret) else Secret.Password(secret), Phase.SIGNED_IN)
        return vpn != null
    }

    /** Runs [action] on the engine off the UI thread; [failed] gets the words on the main thread. */
    fun act(failed: (String) -> Unit = {}, action: (SocialVpn) -> Unit) = calls.execute {
        val engine = vpn
        if (engine == null) {
            main.post { failed("Not signed in.") }
            return@execute
        }
        try {
            action(engine)
        } catch (e: VpnException) {
            main.post { failed(Words.error(e)) }
        }
        refreshNow()
    }

    /** Runs [call] on the calls thread and waits for its result (service worker threads only). */
    fun <T> blocking(call: (SocialVpn?) -> T): T = calls.submit(Callable { call(vpn) }).get()

    /** Signs out: the engine stops, the secret is forgotten (the JID stays for next time). */
    fun signOut() = calls.execute {
        stopEngine()
        store.forgetSecret()
        phase = Phase.SIGNED_OUT
        publish { Snapshot(jid = it.jid) }
    }

    /** Screens of ours started and not yet stopped (main thread). */
    private var visibleScreens = 0

    /**
     * Main thread: a screen of ours started (true) or stopped (false). The engine is told the
     * app is in the foreground while any is visible (XEP-0352: the server may hold back
     * chatter otherwise); the next screen starts before the last one stops.
     */
    fun setVisible(visible: Boolean) {
        visibleScreens = (visibleScreens + if (visible) 1 else -1).coerceAtLeast(0)
        val shown = visibleScreens > 0
        calls.execute {
            if (foreground != shown) {
                foreground = shown
                vpn?.let { engine -> ignoring { engine.setForeground(shown) } }
            }
            scheduleTicker()
        }
    }

    /** The VPN service's tunnel came or went. */
    fun tunnelChanged(on: Boolean, problem: String? = null) {
        publish { it.copy(vpnOn = on, problem = problem) }
        calls.execute { refreshNow() }
    }

    // --- calls thread ---

    private fun start(account: Account, secret: Secret, as_: Phase) {
        PlatformTrust.init(app)
        val prefs = store.preferences
        ignoring { setLogLevel(runCatching { LogLevel.valueOf(prefs.logLevel) }.getOrDefault(LogLevel.WARN)) }
        val config = VpnConfig(
            stateDir = File(app.filesDir, "engine").path,
            jid = account.jid,
            signIn = when (secret) {
                is Secret.Password -> SignIn.Password(secret.value)
                is Secret.Token -> SignIn.Token(secret.value)
            },
            resource = "",
            server = account.server.trim().ifEmpty { null },
            dnsServers = Platform.dnsServers(app),
            caFile = account.caFile.trim().ifEmpty { null },
            iceServers = emptyList(),
            subnet = account.subnet.trim(),
            listenPort = 0u,
            linkPolicy = if (prefs.onDemand) LinkPolicyConfig.OnDemand(MAX_LINKS, ON_DEMAND_IDLE_SECS)
            else LinkPolicyConfig.Proactive(MAX_LINKS),
        )
        generation += 1
        val gen = generation
        phase = as_
        pending = account to secret
        publish { Snapshot(phase = as_, jid = account.jid, state = VpnState.Connecting, vpnOn = it.vpnOn) }
        vpn = try {
            SocialVpn(config, Listener(gen), Protector)
        } catch (e: VpnException) {
            phase = Phase.SIGNED_OUT
            Log.i(TAG, "the engine did not start: ${e.javaClass.simpleName}")
            publish { Snapshot(jid = account.jid, problem = Words.error(e)) }
            null
        }
        vpn?.let { engine -> if (foreground) ignoring { engine.setForeground(true) } }
        scheduleTicker()
    }

    private fun onState(gen: Int, state: VpnState) {
        if (gen != generation) return
        val failed = state is VpnState.AuthFailed || state is VpnState.TokenRejected
        when {
            phase == Phase.SIGNING_IN && state is VpnState.Online -> {
                pending?.let { (account, secret) -> store.save(account, secret.value) }
                phase = Phase.SIGNED_IN
                publish { it.copy(phase = Phase.SIGNED_IN, state = state, problem = null) }
                refreshNow()
            }
            // A first sign-in that fails goes back to the form with the reason: the user
            // fixes the address, password or server rather than waiting on retries.
            phase == Phase.SIGNING_IN && (failed || state is VpnState.Offline || state is VpnState.Stopped) -> {
                stopEngine()
                phase = Phase.SIGNED_OUT
                publish { Snapshot(jid = it.jid, state = state, problem = Words.state(state)) }
            }
            // Signed in before, refused now: the password changed or the token expired.
            failed -> {
                stopEngine()
                store.forgetSecret()
                phase = Phase.SIGNED_OUT
                publish { Snapshot(jid = it.jid, state = state, problem = Words.state(state)) }
            }
            else -> publish { it.copy(state = state) }
        }
    }

    private fun stopEngine() {
        generation += 1
        val engine = vpn ?: return
        vpn = null
        ignoring { engine.stop() }
        engine.destroy()
        scheduleTicker()
    }

    private fun queueRefresh(gen: Int) {
        if (refreshQueued.compareAndSet(false, true)) {
            try {
                calls.execute {
                    refreshQueued.set(false)
                    if (gen == generation) refreshNow()
                }
            } catch (e: RejectedExecutionException) {
                // The session ended (its engine's last events): nothing to refresh.
            }
        }
    }

    private fun refreshNow() {
        val engine = vpn ?: return
        try {
            val friends = engine.roster()
            val status = engine.status()
            publish { it.copy(friends = friends, status = status) }
        } catch (e: VpnException) {
            Log.i(TAG, "refresh failed: ${e.javaClass.simpleName}")
        }
    }

    /** Traffic counters move without events: refreshed every 2 s while a screen is visible. */
    private fun scheduleTicker() {
        val wanted = foreground && vpn != null
        if (wanted && ticker == null) {
            ticker = calls.scheduleWithFixedDelay({ queueRefresh(generation) }, 2, 2, TimeUnit.SECONDS)
        } else if (!wanted) {
            ticker?.cancel(false)
            ticker = null
        }
    }

    private fun publish(change: (Snapshot) -> Snapshot) {
        main.post {
            snapshot = change(snapshot)
            observers.forEach { it(snapshot) }
        }
    }

    private inline fun ignoring(call: () -> Unit) {
        try {
            call()
        } catch (e: VpnException) {
            Log.i(TAG, "engine call failed: ${e.javaClass.simpleName}")
        }
    }

    /** Events from one engine ([gen]); an older engine's late events are dropped on the calls thread. */
    private inner class Listener(private val gen: Int) : VpnEventListener {
        override fun onState(state: VpnState) {
            // An engine stopping as its session ends may still report: nobody listens then.
            try {
                calls.execute { onState(gen, state) }
            } catch (e: RejectedExecutionException) {
                Log.i(TAG, "an ended session's engine reported $state")
            }
        }

        override fun onRosterChanged() = queueRefresh(gen)
        override fun onFriendRequest(jid: String) = queueRefresh(gen)
        override fun onLink(link: LinkEvent) = queueRefresh(gen)
        override fun onTunnelLost(reason: String) {
            SocialVpnService.tunnelLost(app, reason)
        }
    }

    /**
     * Keeps the engine's sockets out of our own tunnel while it is up. Belt and braces: the
     * interface also excludes the app's own package (`VpnBuilderOpener`), so a socket
     * `protect` refuses still cannot enter the tunnel; the refusal is logged, not fatal.
     * Without a tunnel there is nothing to escape.
     */
    private object Protector : SocketProtector {
        override fun protect(fd: Int): Boolean {
            val service = SocialVpnService.running?.takeIf { it.tunnelUp } ?: return true
            if (!service.protect(fd)) Log.i(TAG, "VpnService.protect refused a socket; the app's exclusion keeps it outside")
            return true
        }
    }

    companion object {
        private const val TAG = "SocialVPN"
        private val MAX_LINKS = 16u
        private val ON_DEMAND_IDLE_SECS = 300uL

        @Volatile private var instance: Session? = null

        fun get(context: Context): Session = instance ?: synchronized(this) {
            instance ?: Session(context.applicationContext).also { instance = it }
        }

        /** Ends the engine and forgets the session, as the process's death would (tests). */
        fun endProcess() {
            SocialVpnService.forgetRunning()
            val session = synchronized(this) { instance.also { instance = null } } ?: return
            session.calls.submit { session.stopEngine() }.get()
            session.calls.shutdownNow()
        }
    }
}
