package org.socialvpn.app

import androidx.test.ext.junit.runners.AndroidJUnit4
import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.fail
import org.junit.Test
import org.junit.runner.RunWith
import java.security.GeneralSecurityException

/** The real Android Keystore (the JVM suite stands in a software key for it). */
@RunWith(AndroidJUnit4::class)
class KeystoreSecretBoxTest {
    @Test
    fun sealsOpensAndRefusesTamperedData() {
        val box = KeystoreSecretBox("socialvpn-test-key")
        val secret = "correct horse battery staple".toByteArray()
        val sealed = box.seal(secret)
        assertFalse(String(sealed, Charsets.ISO_8859_1).contains("correct horse"))
        assertArrayEquals(secret, box.open(sealed))
        sealed[sealed.size - 1] = (sealed[sealed.size - 1].toInt() xor 1).toByte()
        try {
            box.open(sealed)
            fail("tampered data opened")
        } catch (expected: GeneralSecurityException) {
        }
    }
}
