package org.socialvpn.app

import android.app.PendingIntent
import android.content.Intent
import android.net.VpnService
import android.os.Build
import android.service.quicksettings.Tile
import android.service.quicksettings.TileService

/**
 * The Quick Settings tile: shows whether the VPN is on, from the same snapshot the app
 * shows (never a guess of its own), and switches it. Without the VPN consent it opens the app.
 */
class VpnTileService : TileService() {
    private val observer: (Snapshot) -> Unit = { show(it) }

    override fun onStartListening() {
        super.onStartListening()
        Session.get(this).observe(observer)
    }

    override fun onStopListening() {
        Session.get(this).forget(observer)
        super.onStopListening()
    }

    override fun onClick() {
        super.onClick()
        val snapshot = Session.get(this).snapshot
        when {
            snapshot.vpnOn -> SocialVpnService.disconnect(this)
            VpnService.prepare(this) != null || Session.get(this).store.load() == null -> openApp()
            else -> SocialVpnService.connect(this)
        }
    }

    private fun openApp() {
        val intent = Intent(this, MainActivity::class.java).addFlags(Intent.FLAG_ACTIVITY_NEW_TASK)
        if (Build.VERSION.SDK_INT >= 34) {
            startActivityAndCollapse(PendingIntent.getActivity(this, 0, intent, PendingIntent.FLAG_IMMUTABLE))
        } else {
            @Suppress("DEPRECATION")
            startActivityAndCollapse(intent)
        }
    }

    private fun show(snapshot: Snapshot) {
        val tile = qsTile ?: return
        tile.state = if (snapshot.vpnOn) Tile.STATE_ACTIVE else Tile.STATE_INACTIVE
        tile.label = "SocialVPN"
        if (Build.VERSION.SDK_INT >= 29) {
            tile.subtitle = when {
                snapshot.vpnOn -> snapshot.status?.ipv4 ?: "On"
                snapshot.phase == Phase.SIGNED_OUT -> "Signed out"
                else -> "Off"
            }
        }
        tile.updateTile()
    }
}
