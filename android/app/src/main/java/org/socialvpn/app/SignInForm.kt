package org.socialvpn.app

/**
 * What the sign-in screen collects, checked before anything is tried: the XMPP address and
 * password, and the advanced overrides (server `host[:port]`, a CA file, the subnet friends'
 * devices get addresses in). Pure Kotlin: the screen shows [problems] next to their fields.
 */
data class SignInForm(
    val jid: String,
    val password: String,
    val server: String = "",
    val caFile: String = "",
    val subnet: String = DEFAULT_SUBNET,
) {
    enum class Field { JID, PASSWORD, SERVER, SUBNET }

    /** A field that cannot work, said in words. */
    data class Problem(val field: Field, val words: String)

    /** Everything wrong with the form (empty: it can be tried). */
    fun problems(needsPassword: Boolean = true): List<Problem> = buildList {
        jidProblem(jid.trim())?.let { add(Problem(Field.JID, it)) }
        if (needsPassword && password.isEmpty()) add(Problem(Field.PASSWORD, "Enter your password."))
        if (server.isNotBlank() && !isHostPort(server.trim())) {
            add(Problem(Field.SERVER, "Write the server as host or host:port, e.g. xmpp.example.org:5222."))
        }
        subnetProblem(subnet.trim())?.let { add(Problem(Field.SUBNET, it)) }
    }

    companion object {
        /** Carrier-grade NAT space: rarely used by the networks a phone joins. */
        const val DEFAULT_SUBNET = "100.64.0.0/16"

        private fun jidProblem(jid: String): String? {
            val at = jid.indexOf('@')
            return when {
                jid.isEmpty() -> "Enter your XMPP address, e.g. alice@example.org."
                at <= 0 || at != jid.lastIndexOf('@') || at == jid.length - 1 ->
                    "An XMPP address looks like alice@example.org."
                jid.any { it.isWhitespace() || it == '/' } ->
                    "An XMPP address has no spaces and no '/'."
                !jid.substring(at + 1).contains('.') && jid.substring(at + 1) != "localhost" ->
                    "The part after @ is the server's domain, e.g. example.org."
                else -> null
            }
        }

        private fun isHostPort(text: String): Boolean {
            val host: String
            val port: String?
            if (text.startsWith("[")) {
                val end = text.indexOf(']')
                if (end < 0) return false
                host = text.substring(1, end)
                port = text.substring(end + 1).removePrefix(":").ifEmpty { null }
            } else {
                val parts = text.split(':')
                if (parts.size > 2) return false
                host = parts[0]
                port = parts.getOrNull(1)
            }
            val portOk = port == null || port.toIntOrNull()?.let { it in 1..65535 } == true
            return host.isNotEmpty() && host.none { it.isWhitespace() || it == '/' } && portOk
        }

        private fun subnetProblem(subnet: String): String? {
            val bad = "Write the subnet as address/length, e.g. $DEFAULT_SUBNET."
            val (address, length) = subnet.split('/').takeIf { it.size == 2 } ?: return bad
            val octets = address.split('.').map { it.toIntOrNull() }
            if (octets.size != 4 || octets.any { it == null || it !in 0..255 }) return bad
            val bits = length.toIntOrNull() ?: return bad
            if (bits !in 8..30) return "Pick a subnet between /8 and /30 (room for your friends' devices)."
            return null
        }
    }
}
