package org.socialvpn.app

import android.content.Context
import android.security.keystore.KeyGenParameterSpec
import android.security.keystore.KeyProperties
import android.util.Base64
import java.security.GeneralSecurityException
import java.security.KeyStore
import javax.crypto.Cipher
import javax.crypto.KeyGenerator
import javax.crypto.SecretKey
import javax.crypto.spec.GCMParameterSpec

/** Encrypts the sign-in secret at rest. */
interface SecretBox {
    fun seal(plain: ByteArray): ByteArray

    /** Throws [GeneralSecurityException] when the key is gone or the data was altered. */
    fun open(sealed: ByteArray): ByteArray
}

/**
 * AES-GCM under a key that lives in the Android Keystore (hardware-backed where the phone
 * has it) and never leaves it: a copied preferences file is useless elsewhere. Sealed form:
 * the 12-byte IV, then the ciphertext with its tag.
 */
class KeystoreSecretBox(private val alias: String = "socialvpn-credentials") : SecretBox {
    private fun key(): SecretKey {
        val store = KeyStore.getInstance(PROVIDER).apply { load(null) }
        (store.getKey(alias, null) as? SecretKey)?.let { return it }
        val spec = KeyGenParameterSpec.Builder(alias, KeyProperties.PURPOSE_ENCRYPT or KeyProperties.PURPOSE_DECRYPT)
            .setBlockModes(KeyProperties.BLOCK_MODE_GCM)
            .setEncryptionPaddings(KeyProperties.ENCRYPTION_PADDING_NONE)
            .setKeySize(256)
            .build()
        return KeyGenerator.getInstance(KeyProperties.KEY_ALGORITHM_AES, PROVIDER).apply { init(spec) }.generateKey()
    }

    override fun seal(plain: ByteArray): ByteArray {
        val cipher = Cipher.getInstance(TRANSFORMATION).apply { init(Cipher.ENCRYPT_MODE, key()) }
        return cipher.iv + cipher.doFinal(plain)
    }

    override fun open(sealed: ByteArray): ByteArray {
        if (sealed.size <= IV_BYTES) throw GeneralSecurityException("sealed secret too short")
        val cipher = Cipher.getInstance(TRANSFORMATION)
        cipher.init(Cipher.DECRYPT_MODE, key(), GCMParameterSpec(128, sealed, 0, IV_BYTES))
        return cipher.doFinal(sealed, IV_BYTES, sealed.size - IV_BYTES)
    }

    private companion object {
        const val PROVIDER = "AndroidKeyStore"
        const val TRANSFORMATION = "AES/GCM/NoPadding"
        const val IV_BYTES = 12
    }
}

/** The signed-in account as stored: everything but the secret in the clear. */
data class Account(
    val jid: String,
    /** The secret is an OAuth token (from the browser), not a password. */
    val usesToken: Boolean,
    val server: String = "",
    val caFile: String = "",
    val subnet: String = SignInForm.DEFAULT_SUBNET,
)

/** What the user picks in settings. */
data class Preferences(val onDemand: Boolean = false, val logLevel: String = "WARN")

/**
 * The account and its sealed secret in the app's private preferences. A secret that no
 * longer opens (the Keystore key was wiped, a restore to another phone) reads as signed
 * out: the user signs in again, nothing crashes.
 */
class AccountStore(context: Context, private val box: SecretBox) {
    private val prefs = context.getSharedPreferences("account", Context.MODE_PRIVATE)

    fun save(account: Account, secret: String) {
        val sealed = Base64.encodeToString(box.seal(secret.toByteArray(Charsets.UTF_8)), Base64.NO_WRAP)
        prefs.edit()
            .putString(JID, account.jid)
            .putBoolean(TOKEN, account.usesToken)
            .putString(SERVER, account.server)
            .putString(CA_FILE, account.caFile)
            .putString(SUBNET, account.subnet)
            .putString(SECRET, sealed)
            .commit()
    }

    /** The stored account and its secret, or null when signed out or the secret is lost. */
    fun load(): Pair<Account, String>? {
        val jid = prefs.getString(JID, null) ?: return null
        val sealed = prefs.getString(SECRET, null) ?: return null
        val secret = try {
            String(box.open(Base64.decode(sealed, Base64.NO_WRAP)), Charsets.UTF_8)
        } catch (e: GeneralSecurityException) {
            return null
        } catch (e: IllegalArgumentException) {
            return null
        }
        val account = Account(
            jid = jid,
            usesToken = prefs.getBoolean(TOKEN, false),
            server = prefs.getString(SERVER, "") ?: "",
            caFile = prefs.getString(CA_FILE, "") ?: "",
            subnet = prefs.getString(SUBNET, null) ?: SignInForm.DEFAULT_SUBNET,
        )
        return account to secret
    }

    /** Signed in before and the secret is still kept (cheap: nothing is decrypted). */
    fun hasAccount(): Boolean = prefs.contains(JID) && prefs.contains(SECRET)

    /** The last JID signed in with (the sign-in screen offers it again after sign-out). */
    fun lastJid(): String = prefs.getString(JID, "") ?: ""

    fun forgetSecret() {
        prefs.edit().remove(SECRET).commit()
    }

    var preferences: Preferences
        get() = Preferences(prefs.getBoolean(ON_DEMAND, false), prefs.getString(LOG_LEVEL, "WARN") ?: "WARN")
        set(value) {
            prefs.edit().putBoolean(ON_DEMAND, value.onDemand).putString(LOG_LEVEL, value.logLevel).commit()
        }

    private companion object {
        const val JID = "jid"
        const val TOKEN = "uses_token"
        const val SERVER = "server"
        const val CA_FILE = "ca_file"
        const val SUBNET = "subnet"
        const val SECRET = "secret_sealed"
        const val ON_DEMAND = "on_demand"
        const val LOG_LEVEL = "log_level"
    }
}
