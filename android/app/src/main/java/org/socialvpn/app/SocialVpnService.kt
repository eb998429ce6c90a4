package org.socialvpn.app

import android.app.Notification
import android.app.NotificationChannel
import android.app.NotificationManager
import android.app.PendingIntent
import android.content.ComponentName
import android.content.Context
import android.content.Intent
import android.content.pm.ServiceInfo
import android.net.ConnectivityManager
import android.net.LinkProperties
import android.net.Network
import android.net.VpnService
import android.os.Build
import android.os.Handler
import android.os.Looper
import android.os.ParcelFileDescriptor
import android.service.quicksettings.TileService
import android.util.Log
import org.socialvpn.core.TunFraming
import org.socialvpn.core.VpnException
import org.socialvpn.core.VpnState
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors

/**
 * The VPN: builds the interface from the engine's tunnel settings and hands its fd to the
 * engine; reports network changes; shows a notification with the state and a disconnect
 * action while it runs.
 *
 * Started by the app's switch and the tile (ACTION_CONNECT) or by Android itself for
 * always-on VPN (a null intent: it signs in from the stored account).
 */
class SocialVpnService : VpnService() {
    private lateinit var worker: ExecutorService
    private val main = Handler(Looper.getMainLooper())
    private var networkCallback: ConnectivityManager.NetworkCallback? = null
    private var lastNetwork: Network? = null
    private val observer: (Snapshot) -> Unit = { notifyState(it) }

    /** Whether the engine holds our tunnel now (main thread). */
    var tunnelUp = false
        private set

    /** Network changes told to the engine (for the tests' eyes). */
    @Volatile var networkChanges = 0
        private set

    override fun onCreate() {
        super.onCreate()
        running = this
        worker = Executors.newSingleThreadExecutor { r -> Thread(r, "socialvpn-service") }
        getSystemService(NotificationManager::class.java).createNotificationChannel(
            NotificationChannel(CHANNEL_ID, "VPN status", NotificationManager.IMPORTANCE_LOW).apply {
                description = "Shown while SocialVPN carries your friends' traffic"
            },
        )
        Session.get(this).observe(observer)
    }

    override fun onStartCommand(intent: Intent?, flags: Int, startId: Int): Int {
        if (intent?.action == ACTION_DISCONNECT) {
            disconnect(null)
            return START_NOT_STICKY
        }
        // Consent first: without it establish() fails; the app's switch asks for it.
        if (prepare(this) != null) {
            Log.i(TAG, "no VPN consent: not starting")
            Session.get(this).tunnelChanged(false, "Allow SocialVPN to set up a VPN connection first.")
            stopSelf()
            return START_NOT_STICKY
        }
        if (!tunnelUp) {
            goForeground()
            worker.execute {
                try {
                    connect()
                } catch (e: Exception) {
                    // Whatever the platform throws here (a checked exception from the Builder
                    // too) must end in words and a stopped service, never a silent dead thread.
                    Log.w(TAG, "the VPN could not start", e)
                    failed("The VPN could not start: ${e.javaClass.simpleName}.")
                }
            }
        }
        return START_STICKY
    }

    /** Worker thread: sign in if needed, make the interface, hand it to the engine. */
    private fun connect() {
        val session = Session.get(this)
        if (!session.resumeBlocking()) return failed("Sign in to SocialVPN first.")
        val settings = session.blocking { it?.tunnelSettings() } ?: return failed("Sign in to SocialVPN first.")
        val fd = try {
            Platform.tunnelOpener(this).open(settings)
        } catch (e: RuntimeException) {
            Log.w(TAG, "establish failed", e)
            null
        } ?: return failed("Android did not let SocialVPN create its VPN interface (another VPN may be set to always-on).")
        val refused: String? = session.blocking { vpn ->
            when {
                vpn == null -> "Signed out meanwhile."
                else -> try {
                    vpn.startTunnel(fd, TunFraming.RAW_IP)
                    null
                } catch (e: VpnException) {
                    Words.error(e)
                }
            }
        }
        if (refused != null) {
            // On failure the fd stays ours to close.
            ParcelFileDescriptor.adoptFd(fd).close()
            return failed(refused)
        }
        main.post {
            tunnelUp = true
            watchNetwork()
            session.tunnelChanged(true)
            refreshTile(this)
        }
    }

    private fun failed(words: String) {
        Log.i(TAG, "the VPN could not start: $words")
        main.post { disconnect(words) }
    }

    /** Main thread: closes the tunnel (the engine stays signed in) and ends the service. */
    private fun disconnect(problem: String?) {
        networkCallback?.let { getSystemService(ConnectivityManager::class.java).unregisterNetworkCallback(it) }
        networkCallback = null
        val wasUp = tunnelUp
        tunnelUp = false
        val session = Session.get(this)
        if (wasUp) worker.execute { session.blocking { vpn -> runCatching { vpn?.stopTunnel() } } }
        session.tunnelChanged(false, problem)
        stopForeground(STOP_FOREGROUND_REMOVE)
        stopSelf()
        refreshTile(this)
    }

    override fun onRevoke() {
        // Another VPN started, or the user withdrew the permission in Settings.
        disconnect("The VPN was switched off by Android or another VPN app.")
    }

    override fun onDestroy() {
        Session.get(this).forget(observer)
        if (tunnelUp) disconnect(null)
        worker.shutdown()
        if (running === this) running = null
        super.onDestroy()
    }

    /** The engine reports only real changes of the default network (Wi-Fi ↔ cellular, a new one). */
    private fun watchNetwork() {
        val cm = getSystemService(ConnectivityManager::class.java)
        val callback = object : ConnectivityManager.NetworkCallback() {
            override fun onAvailable(network: Network) {
                changed(network)
            }

            override fun onLinkPropertiesChanged(network: Network, properties: LinkProperties) {
                changed(network, properties)
            }
            override fun onLost(network: Network) {
                main.post { if (lastNetwork == network) lastNetwork = null }
            }
        }
        cm.registerDefaultNetworkCallback(callback)
        networkCallback = callback
    }

    private var lastProperties: LinkProperties? = null
    private var seenNetwork = false

    private fun changed(network: Network, properties: LinkProperties? = null) {
        main.post { changedOnMain(network, properties) }
    }

    /** The callback's first report is the network the engine already uses: not a change. */
    private fun changedOnMain(network: Network, properties: LinkProperties?) {
        val same = network == lastNetwork && (properties == null || properties == lastProperties)
        val first = !seenNetwork
        seenNetwork = true
        lastNetwork = network
        if (properties != null) lastProperties = properties
        if (first || same) return
        networkChanges += 1
        Session.get(this).act { it.networkChanged() }
    }

    private fun goForeground() {
        val notification = notification(notificationText(Session.get(this).snapshot))
        try {
            if (Build.VERSION.SDK_INT >= 34) {
                // systemExempted: the type Android 14+ reserves for, among others, VPN apps
                // that hold the VPN consent (checked above). It needs no runtime permission
                // beyond the manifest's, unlike dataSync/specialUse it has no time limit on
                // Android 15+, and it is what Android's own VPN guidance names.
                startForeground(NOTIFICATION_ID, notification, ServiceInfo.FOREGROUND_SERVICE_TYPE_SYSTEM_EXEMPTED)
            } else {
                startForeground(NOTIFICATION_ID, notification)
            }
        } catch (e: RuntimeException) {
            // A refused foreground start must not crash the VPN: the system keeps a bound
            // VpnService alive while its interface exists, only the notification is missing.
            Log.w(TAG, "foreground start refused: ${e.javaClass.simpleName}")
        }
    }

    /** What the notification shows now (title and line); snapshots repeat it every 2 s while a screen is open. */
    private var shown: String? = null

    private fun notifyState(snapshot: Snapshot) {
        if (!tunnelUp) return
        val text = notificationText(snapshot)
        if ("$tunnelUp $text" == shown) return
        getSystemService(NotificationManager::class.java)?.notify(NOTIFICATION_ID, notification(text))
    }

    private fun notificationText(snapshot: Snapshot): String {
        val linked = snapshot.friends.sumOf { f -> f.devices.count { d -> d.link.isUp() } }
        return when {
            !tunnelUp -> "Connecting…"
            snapshot.state is VpnState.Online ->
                "${snapshot.status?.ipv4 ?: ""} · " + if (linked == 1) "1 device linked" else "$linked devices linked"
            else -> snapshot.state?.let { Words.state(it) } ?: "Connecting…"
        }
    }

    private fun notification(text: String): Notification {
        shown = "$tunnelUp $text"
        val open = PendingIntent.getActivity(
            this, 0, Intent(this, MainActivity::class.java), PendingIntent.FLAG_IMMUTABLE or PendingIntent.FLAG_UPDATE_CURRENT,
        )
        val stop = PendingIntent.getService(
            this, 1, Intent(this, SocialVpnService::class.java).setAction(ACTION_DISCONNECT),
            PendingIntent.FLAG_IMMUTABLE or PendingIntent.FLAG_UPDATE_CURRENT,
        )
        return Notification.Builder(this, CHANNEL_ID)
            .setContentTitle(if (tunnelUp) "SocialVPN is on" else "SocialVPN")
            .setContentText(text)
            .setSmallIcon(android.R.drawable.ic_lock_lock)
            .setOngoing(true)
            .setContentIntent(open)
            .addAction(Notification.Action.Builder(null, "Disconnect", stop).build())
            .build()
    }

    companion object {
        const val ACTION_CONNECT = "org.socialvpn.app.CONNECT"
        const val ACTION_DISCONNECT = "org.socialvpn.app.DISCONNECT"
        const val CHANNEL_ID = "vpn"
        const val NOTIFICATION_ID = 1
        private const val TAG = "SocialVPN"

        /** The running service, for the engine's socket protector. */
        @Volatile var running: SocialVpnService? = null
            private set

        /** The process ended (tests stand in for its death): no service is running any more. */
        internal fun forgetRunning() {
            running = null
        }

                fun connect(context: Context) {
            val intent = Intent(context, SocialVpnService::class.java).setAction(ACTION_CONNECT)
            context.startForegroundService(intent)
        }

        fun disconnect(context: Context) {
            context.startService(Intent(context, SocialVpnService::class.java).setAction(ACTION_DISCONNECT))
        }

        /** The engine gave the tunnel up (interface gone): show the VPN as off. */
        internal fun tunnelLost(context: Context, reason: String) {
            Handler(Looper.getMainLooper()).post {
                val service = running
                if (service != null) service.disconnect("The VPN interface was lost: $reason")
                else Session.get(context).tunnelChanged(false, "The VPN interface was lost: $reason")
            }
        }

        fun refreshTile(context: Context) {
            TileService.requestListeningState(context, ComponentName(context, VpnTileService::class.java))
        }
    }
}

internal fun org.socialvpn.core.LinkState.isUp(): Boolean =
    this is org.socialvpn.core.LinkState.Direct || this is org.socialvpn.core.LinkState.Relayed
