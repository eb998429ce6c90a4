package org.socialvpn.app

import android.content.Context
import android.view.View
import android.view.ViewGroup
import android.widget.BaseAdapter
import android.widget.Button
import android.widget.LinearLayout
import android.widget.Switch
import android.widget.TextView
import org.socialvpn.app.Ui.column
import org.socialvpn.app.Ui.dp
import org.socialvpn.app.Ui.label
import org.socialvpn.app.Ui.row
import org.socialvpn.app.Ui.weighted
import org.socialvpn.app.Ui.wide
import org.socialvpn.core.Friend

/** What the friends list does when the user touches a row. */
interface FriendActions {
    fun setEnabled(friend: Friend, enabled: Boolean)
    fun accept(friend: Friend)
    fun decline(friend: Friend)
    fun showMenu(friend: Friend)
}

/** One line of the friends list. */
sealed class Row {
    data class Header(val title: String) : Row()
    data class Request(val friend: Friend) : Row()
    data class Person(val friend: Friend) : Row()
}

/** The list in sections: requests, friends on SocialVPN, everyone else. */
fun rows(snapshot: Snapshot): List<Row> = buildList {
    if (snapshot.requests.isNotEmpty()) {
        add(Row.Header("Friend requests"))
        snapshot.requests.forEach { add(Row.Request(it)) }
    }
    val running = snapshot.onSocialVpn.sortedWith(compareBy({ !it.own }, { name(it).lowercase() }))
    add(Row.Header("On SocialVPN"))
    running.forEach { add(Row.Person(it)) }
    val others = snapshot.others.filter { !it.own }.sortedBy { name(it).lowercase() }
    if (others.isNotEmpty()) {
        add(Row.Header("Other friends"))
        others.forEach { add(Row.Person(it)) }
    }
}

fun name(friend: Friend): String = when {
    friend.own -> "My other devices"
    else -> friend.name?.takeIf { it.isNotBlank() } ?: friend.jid
}

/** What a friend without a SocialVPN device online is doing. */
fun absence(friend: Friend): String = when {
    friend.pendingOut && !friend.mutual -> "Asked · waiting for them to accept"
    friend.devices.isNotEmpty() -> "Online, but not on SocialVPN"
    else -> "Offline"
}

class FriendAdapter(private val context: Context, private val actions: FriendActions) : BaseAdapter() {
    var rows: List<Row> = emptyList()
        set(value) {
            field = value
            notifyDataSetChanged()
        }

    override fun getCount() = rows.size
    override fun getItem(position: Int) = rows[position]
    override fun getItemId(position: Int) = when (val row = rows[position]) {
        is Row.Header -> row.title.hashCode().toLong()
        is Row.Request -> ("?" + row.friend.jid).hashCode().toLong()
        is Row.Person -> row.friend.jid.hashCode().toLong()
    }

    override fun hasStableIds() = true
    override fun getViewTypeCount() = 3
    override fun getItemViewType(position: Int) = when (rows[position]) {
        is Row.Header -> 0
        is Row.Request -> 1
        is Row.Person -> 2
    }

    override fun isEnabled(position: Int) = rows[position] is Row.Person

    override fun getView(position: Int, convertView: View?, parent: ViewGroup): View = when (val row = rows[position]) {
        is Row.Header -> ((convertView as? TextView) ?: header()).apply { text = row.title }
        is Row.Request -> ((convertView as? RequestView) ?: RequestView(context)).apply { bind(row.friend) }
        is Row.Person -> ((convertView as? PersonView) ?: PersonView(context)).apply { bind(row.friend) }
    }

    private fun header() = context.label(style = Ui.Style.HEADING).apply {
        setPadding(context.dp(16), context.dp(16), context.dp(16), context.dp(4))
    }

    /** Someone asking to be a friend: accept or decline right here. */
    inner class RequestView(context: Context) : LinearLayout(context) {
        private val title = context.label()
        private val detail = context.label("wants to be your friend", Ui.Style.DETAIL)
        private val accept = Button(context).apply { text = "Accept" }
        private val decline = Button(context, null, android.R.attr.borderlessButtonStyle).apply { text = "Decline" }

        init {
            orientation = VERTICAL
            setPadding(context.dp(16), context.dp(8), context.dp(16), context.dp(8))
            addView(title)
            addView(detail)
            addView(context.row().apply { addView(accept); addView(decline) })
        }

        fun bind(friend: Friend) {
            title.text = name(friend)
            accept.setOnClickListener { actions.accept(friend) }
            decline.setOnClickListener { actions.decline(friend) }
            tag = friend.jid
        }
    }

    /** A friend: name, one line per online device, and the switch that acts at once. */
    inner class PersonView(context: Context) : LinearLayout(context) {
        private val title = context.label()
        private val subtitle = context.label(style = Ui.Style.DETAIL)
        val toggle = Switch(context)
        private val devices = context.column(0)

        init {
            orientation = VERTICAL
            setPadding(context.dp(16), context.dp(10), context.dp(16), context.dp(10))
            val top = context.row()
            val names = context.column(0).apply { addView(title); addView(subtitle) }
            top.addView(names, weighted())
            top.addView(toggle)
            addView(top)
            addView(devices)
            setOnLongClickListener { (tag as? Friend)?.let(actions::showMenu); true }
        }

        fun bind(friend: Friend) {
            tag = friend
            title.text = name(friend)
            val running = friend.devices.filter { it.socialvpn }
            subtitle.text = when {
                friend.own -> "Your account on other devices"
                running.isEmpty() -> absence(friend)
                friend.name?.isNotBlank() == true -> friend.jid
                else -> if (running.size == 1) "1 device" else "${running.size} devices"
            }
            toggle.setOnCheckedChangeListener(null)
            toggle.isChecked = friend.enabled
            toggle.visibility = if (friend.own) View.INVISIBLE else View.VISIBLE
            toggle.contentDescription = "Carry traffic for ${name(friend)}" + if (name(friend) != friend.jid) " (${friend.jid})" else ""
            toggle.setOnCheckedChangeListener { _, on -> actions.setEnabled(friend, on) }
            devices.removeAllViews()
            for (device in running) {
                devices.addView(context.label(Words.device(device, friend.enabled), Ui.Style.DETAIL), context.wide(4))
            }
        }
    }
}
