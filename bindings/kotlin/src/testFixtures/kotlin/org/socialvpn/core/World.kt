package org.socialvpn.core

import com.sun.jna.Library
import com.sun.jna.Native
import com.sun.jna.NativeLong
import java.io.File
import java.nio.file.Files
import java.util.Properties
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit

/** What socialvpn-jvm-world built for these tests (accounts, servers, the Rust peers). */
object World {
    private val properties: Properties by lazy {
        val path = System.getenv("SOCIALVPN_WORLD")
            ?: error("SOCIALVPN_WORLD is not set: run the suite with bindings/test-jvm")
        Properties().apply { File(path).inputStream().use { load(it) } }
    }

    fun get(key: String): String = properties.getProperty(key) ?: error("world property $key missing")

    val workDir: File get() = File(get("work.dir"))

    /** A fresh state directory (the device key, addresses and toggles live there). */
    fun stateDir(name: String): File = Files.createTempDirectory(workDir.toPath(), "$name-").toFile()

    /**
     * What a user types: the JID and password. The server is found by DNS SRV records from
     * the network's DNS server (as the app passes `LinkProperties.getDnsServers()`), STUN and
     * TURN come from the XMPP server (XEP-0215); only the test world's private CA is extra.
     */
    fun config(user: String, stateDir: File, password: String = get("$user.password")) = VpnConfig(
        stateDir = stateDir.path,
        jid = get("$user.jid"),
        signIn = SignIn.Password(password),
        resource = "",
        server = null,
        dnsServers = listOf(get("dns")),
        caFile = get("ca.file"),
        iceServers = emptyList(),
        subnet = "100.64.0.0/16",
        listenPort = 0u,
        linkPolicy = LinkPolicyConfig.Proactive(maxLinks = 16u),
    )

    /** The world's STUN and TURN servers as an app's settings would name them. */
    fun iceServers() = listOf(
        IceServer(url = get("stun"), username = null, password = null),
        IceServer(url = get("turn"), username = get("turn.user"), password = get("turn.password")),
    )

    /** Runs the Rust peer's command line (`socialvpn ARGS --socket PEER`) and returns stdout. */
    fun peer(vararg args: String): String {
        val process = ProcessBuilder(listOf(get("socialvpn.bin")) + args + listOf("--socket", get("peer.socket")))
            .redirectErrorStream(true)
            .start()
        val out = process.inputStream.bufferedReader().readText()
        check(process.waitFor(20, TimeUnit.SECONDS) && process.exitValue() == 0) { "socialvpn ${args.toList()}: $out" }
        return out
    }

    /** Runs a command in the Rust peer's namespace (it pings back); true on exit status 0. */
    fun runAtPeer(vararg command: String): Pair<Boolean, String> =
        run("ip", "netns", "exec", get("peer.netns"), *command)

    /** Runs a command in the test JVM's namespace; true on exit status 0. */
    fun run(vararg command: String): Pair<Boolean, String> {
        val process = ProcessBuilder(*command).redirectErrorStream(true).start()
        val out = process.inputStream.bufferedReader().readText()
        val finished = process.waitFor(30, TimeUnit.SECONDS)
        if (!finished) process.destroyForcibly()
        return Pair(finished && process.exitValue() == 0, out)
    }
}

/** Polls `check` every 200 ms until it returns a value or `seconds` pass. */
fun <T : Any> eventually(seconds: Long, what: String, check: () -> T?): T {
    val deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds)
    var last: Throwable? = null
    while (System.nanoTime() < deadline) {
        try {
            check()?.let { return it }
        } catch (e: VpnException) {
            last = e
        }
        Thread.sleep(200)
    }
    throw AssertionError("timed out after ${seconds}s waiting for $what", last)
}

/** Every event in arrival order, with the thread each arrived on. */
class RecordingListener : VpnEventListener {
    sealed class Event {
        data class State(val state: VpnState) : Event()
        object RosterChanged : Event()
        data class FriendRequest(val jid: String) : Event()
        data class Link(val link: LinkEvent) : Event()
        data class TunnelLost(val reason: String) : Event()
    }

    val events = LinkedBlockingQueue<Event>()
    val threads: MutableSet<String> = java.util.concurrent.ConcurrentHashMap.newKeySet()
    private val seen = java.util.Collections.synchronizedList(mutableListOf<Event>())

    private fun record(event: Event) {
        threads.add(Thread.currentThread().name)
        seen.add(event)
        events.add(event)
    }

    override fun onState(state: VpnState) = record(Event.State(state))
    override fun onRosterChanged() = record(Event.RosterChanged)
    override fun onFriendRequest(jid: String) = record(Event.FriendRequest(jid))
    override fun onLink(link: LinkEvent) = record(Event.Link(link))
    override fun onTunnelLost(reason: String) = record(Event.TunnelLost(reason))

    /** Waits for an event matching `match` (past events included) and returns it. */
    fun <T : Any> await(seconds: Long, what: String, match: (Event) -> T?): T {
        synchronized(seen) { seen.firstNotNullOfOrNull(match) }?.let { return it }
        val deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds)
        while (true) {
            val left = deadline - System.nanoTime()
            if (left <= 0) throw AssertionError("no $what within ${seconds}s; events: ${synchronized(seen) { seen.toList() }}")
            val event = events.poll(left, TimeUnit.NANOSECONDS) ?: continue
            match(event)?.let { return it }
        }
    }

    fun awaitState(seconds: Long, state: (VpnState) -> Boolean): VpnState =
        await(seconds, "state") { e -> (e as? Event.State)?.state?.takeIf(state) }
}

/** The C library calls the tests need to make fds as the platforms do. */
interface LibC : Library {
    fun open(path: String, flags: Int, mode: Int): Int
    fun ioctl(fd: Int, request: NativeLong, ifreq: ByteArray): Int
    fun write(fd: Int, buf: ByteArray, count: NativeLong): NativeLong
    fun close(fd: Int): Int

    companion object {
        val lib: LibC by lazy { Native.load("c", LibC::class.java) }
        const val O_RDWR = 2
        const val O_WRONLY_CREAT = 0x41
    }
}

/** Linux tun as VpnService would hand it over: an fd of /dev/net/tun without packet info. */
object LinuxTun {
    private val libc get() = LibC.lib
    private const val O_RDWR = LibC.O_RDWR
    private const val TUNSETIFF = 0x400454caL
    private const val IFF_TUN: Short = 0x0001
    private const val IFF_NO_PI: Short = 0x1000

    /** Opens `name`, gives it the engine's addresses and route, and returns its fd. */
    fun open(name: String, settings: TunnelSettings): Int {
        val fd = libc.open("/dev/net/tun", O_RDWR, 0)
        check(fd >= 0) { "open /dev/net/tun failed" }
        val ifreq = ByteArray(40)
        name.toByteArray().copyInto(ifreq)
        val flags = (IFF_TUN.toInt() or IFF_NO_PI.toInt())
        ifreq[16] = (flags and 0xff).toByte()
        ifreq[17] = (flags shr 8).toByte()
        if (libc.ioctl(fd, NativeLong(TUNSETIFF), ifreq) != 0) {
            libc.close(fd)
            error("TUNSETIFF $name failed")
        }
        for (cmd in listOf(
            listOf("ip", "addr", "add", "${settings.ipv4}/${settings.ipv4Prefix}", "dev", name),
            listOf("ip", "-6", "addr", "add", "${settings.ipv6}/${settings.ipv6Prefix}", "dev", name),
            listOf("ip", "link", "set", name, "mtu", settings.mtu.toString(), "up"),
        )) {
            val (ok, out) = World.run(*cmd.toTypedArray())
            check(ok) { "$cmd: $out" }
        }
        return fd
    }

    fun close(fd: Int) = libc.close(fd)
}
