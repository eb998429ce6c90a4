//! Android only: the app hands the platform TLS verifier its Context once. uniffi cannot pass
//! a Java object, so this is the one JNI entry point: `org.socialvpn.app.PlatformTrust.
//! initVerifier(Context)`, called before the first engine or sign-in request. From then on
//! server certificates are checked by Android's own trust store (system and user CAs).

use jni::errors::LogErrorAndDefault;
use jni::objects::{JClass, JObject};
use jni::EnvUnowned;

/// True once the verifier holds the Context; false (logged) when JNI refused.
#[no_mangle]
pub extern "system" fn Java_org_socialvpn_app_PlatformTrust_initVerifier<'caller>(
    mut env: EnvUnowned<'caller>,
    _class: JClass<'caller>,
    context: JObject<'caller>,
) -> bool {
    crate::logging::init();
    env.with_env(|env| -> Result<bool, jni::errors::Error> {
        rustls_platform_verifier::android::init_with_env(env, context)?;
        socialvpn_core::xmpp::trust::platform_verifier_ready();
        Ok(true)
    })
    .resolve::<LogErrorAndDefault>()
}
