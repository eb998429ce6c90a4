package org.socialvpn.app

import android.app.Activity
import android.view.View
import android.widget.Button
import android.widget.LinearLayout
import android.widget.ListView
import android.widget.Switch
import android.widget.TextView
import org.socialvpn.app.Ui.column
import org.socialvpn.app.Ui.dp
import org.socialvpn.app.Ui.label
import org.socialvpn.app.Ui.row
import org.socialvpn.app.Ui.shown
import org.socialvpn.app.Ui.weighted
import org.socialvpn.app.Ui.wide
import org.socialvpn.core.VpnState

/**
 * The main screen once signed in: the VPN's own switch and status (my address and subnet,
 * the XMPP state, traffic), then the friends list.
 */
class FriendsScreen(
    private val activity: Activity,
    actions: FriendActions,
    private val onVpnSwitch: (Boolean) -> Unit,
    private val onAddFriend: () -> Unit,
) {
    val vpnSwitch = Switch(activity).apply { id = Ids.VPN_SWITCH; contentDescription = "VPN" }
    val myAddress: TextView = activity.label(style = Ui.Style.DETAIL).apply { id = Ids.MY_ADDRESS }
    val xmppState: TextView = activity.label(style = Ui.Style.DETAIL).apply { id = Ids.XMPP_STATE }
    val traffic: TextView = activity.label(style = Ui.Style.DETAIL).apply { id = Ids.TRAFFIC }
    val vpnProblem: TextView = activity.label(style = Ui.Style.DETAIL).apply {
        id = Ids.VPN_PROBLEM
        setTextColor(activity.getColor(android.R.color.holo_red_dark))
    }
    private val vpnTitle = activity.label("VPN off", Ui.Style.TITLE)
    val addFriend = Button(activity).apply { id = Ids.ADD_FRIEND; text = "Add friend" }
    val adapter = FriendAdapter(activity, actions)
    val list = ListView(activity).apply {
        id = Ids.FRIENDS
        adapter = this@FriendsScreen.adapter
        dividerHeight = 0
        setPadding(0, 0, 0, activity.dp(16))
    }

    /** The status card scrolls away with the list: on a small phone the friends get the room. */
    val view: View = list.apply {
        val card = activity.column(16)
        val top = activity.row()
        top.addView(vpnTitle, weighted())
        top.addView(vpnSwitch)
        card.addView(top)
        card.addView(myAddress, activity.wide(4))
        card.addView(xmppState, activity.wide(2))
        card.addView(traffic, activity.wide(2))
        card.addView(vpnProblem, activity.wide(2))
        card.addView(addFriend, activity.wide(8))
        addHeaderView(card, null, false)
    }

    init {
        vpnSwitch.setOnCheckedChangeListener { _, on -> onVpnSwitch(on) }
        addFriend.setOnClickListener { onAddFriend() }
    }

    fun render(snapshot: Snapshot) {
        vpnSwitch.setOnCheckedChangeListener(null)
        vpnSwitch.isChecked = snapshot.vpnOn
        vpnSwitch.setOnCheckedChangeListener { _, on -> onVpnSwitch(on) }
        vpnTitle.text = if (snapshot.vpnOn) "VPN on" else "VPN off"
        val status = snapshot.status
        myAddress.text = if (status != null) "${snapshot.jid}\nMy address ${status.ipv4} in ${status.subnet}" else snapshot.jid
        xmppState.text = "XMPP: " + (snapshot.state?.let { Words.state(it) } ?: "—")
        traffic.text = status?.let {
            "Traffic ↑ ${Words.bytes(it.txBytes)} ↓ ${Words.bytes(it.rxBytes)}" +
                if (it.dropped > 0uL) " · ${it.dropped} packets dropped" else ""
        } ?: ""
        vpnProblem.text = snapshot.problem ?: ""
        vpnProblem.shown(snapshot.problem != null)
        addFriend.isEnabled = snapshot.state is VpnState.Online
        adapter.rows = rows(snapshot)
    }
}
