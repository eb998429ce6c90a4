package org.socialvpn.app

import android.content.Context
import android.util.Log

/**
 * Hands the core's TLS verifier (rustls-platform-verifier) the app's Context, once, so server
 * certificates are checked by Android's own trust store, including CAs the user installed.
 * uniffi cannot pass a Context; this one JNI call does (bindings/src/android_trust.rs).
 * Until it has run, the core checks against the public web roots instead.
 */
object PlatformTrust {
    @Volatile private var done = false

    @JvmStatic private external fun initVerifier(context: Context): Boolean

    /** Off the UI thread, before the first engine or sign-in request. */
    @Synchronized
    fun init(context: Context) {
        // Only on Android's runtime: the JVM tests run the Linux library, which has no JNI part.
        if (done || System.getProperty("java.vm.name") != "Dalvik") return
        done = try {
            // The same .so JNA loads: loading it here registers its JNI entry points.
            System.loadLibrary("socialvpn_ffi")
            initVerifier(context.applicationContext)
        } catch (e: UnsatisfiedLinkError) {
            Log.w("SocialVPN", "platform TLS verifier unavailable: ${e.javaClass.simpleName}")
            false
        }
    }
}
