package org.socialvpn.app

import android.app.Activity
import android.os.Looper
import android.view.View
import android.view.ViewGroup
import android.widget.TextView
import org.robolectric.Shadows.shadowOf
import org.socialvpn.core.LinuxTun
import org.socialvpn.core.World
import java.security.SecureRandom
import java.util.concurrent.TimeUnit
import javax.crypto.Cipher
import javax.crypto.KeyGenerator
import javax.crypto.spec.GCMParameterSpec

/** A software AES-GCM box: Robolectric has no Android Keystore (androidTest checks the real one). */
class SoftwareSecretBox : SecretBox {
    private val key = KeyGenerator.getInstance("AES").apply { init(256) }.generateKey()
    override fun seal(plain: ByteArray): ByteArray {
        val iv = ByteArray(12).also { SecureRandom().nextBytes(it) }
        val cipher = Cipher.getInstance("AES/GCM/NoPadding").apply { init(Cipher.ENCRYPT_MODE, key, GCMParameterSpec(128, iv)) }
        return iv + cipher.doFinal(plain)
    }

    override fun open(sealed: ByteArray): ByteArray {
        val cipher = Cipher.getInstance("AES/GCM/NoPadding")
        cipher.init(Cipher.DECRYPT_MODE, key, GCMParameterSpec(128, sealed, 0, 12))
        return cipher.doFinal(sealed, 12, sealed.size - 12)
    }
}

/** What the tests put where the phone would be: the world's DNS, a Linux TUN for establish(). */
object TestPlatform {
    val box = SoftwareSecretBox()

    /** The builder each opened tunnel was configured with (the service's real code did it). */
    @Volatile var lastBuilder: android.net.VpnService.Builder? = null
    private var tunnels = 0

    fun install(tunName: String = "svpn-an") {
        org.robolectric.shadows.ShadowLog.stream = System.out
        answerPackageQueries()
        Platform.secretBox = { box }
        Platform.dnsServers = { listOf(World.get("dns")) }
        Platform.tunnelOpener = { service ->
            TunnelOpener { settings ->
                lastBuilder = VpnBuilderOpener(service).configure(service.Builder(), settings)
                LinuxTun.open("$tunName${tunnels++}", settings)
            }
        }
    }
}

/**
 * `VpnService.Builder.addDisallowedApplication` asks the system's package manager whether the
 * package exists; Robolectric has none behind `AppGlobals`. This one knows every package, so
 * the service's real Builder calls run unchanged.
 */
private fun answerPackageQueries() {
    val ipm = Class.forName("android.content.pm.IPackageManager")
    val binder = android.os.Binder()
    val manager = java.lang.reflect.Proxy.newProxyInstance(ipm.classLoader, arrayOf(ipm)) { _, method, args ->
        when {
            method.name == "getApplicationInfo" -> android.content.pm.ApplicationInfo().apply { packageName = args[0] as String }
            method.name == "asBinder" -> binder
            method.returnType == Boolean::class.javaPrimitiveType -> false
            method.returnType == Int::class.javaPrimitiveType -> 0
            method.returnType == Long::class.javaPrimitiveType -> 0L
            else -> null
        }
    } as android.os.IInterface
    @Suppress("UNCHECKED_CAST")
    org.robolectric.shadows.ShadowServiceManager.addBinderService("package", ipm as Class<out android.os.IInterface>, manager)
}

/** Runs the main looper until [check] holds or [seconds] pass (background threads post to it). */
fun <T : Any> waitOnMain(seconds: Long, what: String, check: () -> T?): T {
    val deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds)
    while (System.nanoTime() < deadline) {
        shadowOf(Looper.getMainLooper()).idle()
        check()?.let { return it }
        Thread.sleep(100)
    }
    shadowOf(Looper.getMainLooper()).idle()
    return check() ?: throw AssertionError("timed out after ${seconds}s waiting for $what\n" + appThreads())
}

/** Where the app's own threads are (for a timeout's message). */
fun appThreads(): String = Thread.getAllStackTraces().entries
    .filter { (t, _) -> t.name.startsWith("socialvpn") }
    .joinToString("\n") { (t, stack) -> "thread ${t.name} ${t.state}:\n  " + stack.take(12).joinToString("\n  ") }

/** The on-screen view of the list's first row matching [match], scrolled to it first. */
inline fun <reified V : View> rowView(list: android.widget.ListView, crossinline match: (Row) -> Boolean): V? {
    val adapter = (list.adapter as android.widget.HeaderViewListAdapter).wrappedAdapter as FriendAdapter
    val position = adapter.rows.indexOfFirst { match(it) }.takeIf { it >= 0 }?.plus(list.headerViewsCount) ?: return null
    list.setSelection(position)
    list.measure(
        View.MeasureSpec.makeMeasureSpec(list.width.coerceAtLeast(1), View.MeasureSpec.EXACTLY),
        View.MeasureSpec.makeMeasureSpec(list.height.coerceAtLeast(1), View.MeasureSpec.EXACTLY),
    )
    list.layout(list.left, list.top, list.right, list.bottom)
    val child = list.getChildAt(position - list.firstVisiblePosition) ?: return null
    return child as? V
}

/** Every view under [root], depth first. */
fun views(root: View): Sequence<View> = sequence {
    yield(root)
    if (root is ViewGroup) for (i in 0 until root.childCount) yieldAll(views(root.getChildAt(i)))
}

/** The texts on screen, for assertions and failure messages. */
fun Activity.texts(): List<String> =
    views(window.decorView).filterIsInstance<TextView>().filter { it.isShown }.map { it.text.toString() }.toList()
