import java.io.File

// The SocialVPN app. `./gradlew assembleRelease` builds the core for three ABIs with
// cargo-ndk, generates the uniffi Kotlin bindings, and packs both with JNA's Android AAR.
// Needs: Android SDK (platform 36, build-tools), NDK (ANDROID_NDK_HOME), Rust with the
// targets aarch64-linux-android, armv7-linux-androideabi, x86_64-linux-android, and
// `cargo install cargo-ndk`. Signing: SOCIALVPN_KEYSTORE, SOCIALVPN_KEYSTORE_PASSWORD,
// SOCIALVPN_KEY_ALIAS, SOCIALVPN_KEY_PASSWORD (release builds are unsigned without them).
plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

val repoRoot: File = rootDir.parentFile
val jniLibsDir = layout.buildDirectory.dir("rust/jniLibs")
val bindingsDir = layout.buildDirectory.dir("generated/uniffi/kotlin")
val abis = listOf("arm64-v8a", "armeabi-v7a", "x86_64")

android {
    namespace = "org.socialvpn.app"
    compileSdk = 36
    ndkVersion = "28.2.13676358"

    defaultConfig {
        applicationId = "org.socialvpn.app"
        minSdk = 26
        // Google Play requires API 36 for new apps and updates from 31 August 2026.
        targetSdk = 36
        versionCode = (System.getenv("SOCIALVPN_VERSION_CODE") ?: "1").toInt()
        versionName = "0.1.0"
        testInstrumentationRunner = "androidx.test.runner.AndroidJUnitRunner"
        ndk { abiFilters += abis }
    }

    signingConfigs {
        create("release") {
            System.getenv("SOCIALVPN_KEYSTORE")?.let { storeFile = file(it) }
            storePassword = System.getenv("SOCIALVPN_KEYSTORE_PASSWORD")
            keyAlias = System.getenv("SOCIALVPN_KEY_ALIAS")
            keyPassword = System.getenv("SOCIALVPN_KEY_PASSWORD")
        }
    }

    buildTypes {
        release {
            isMinifyEnabled = true
            proguardFiles(getDefaultProguardFile("proguard-android-optimize.txt"), "proguard-rules.pro")
            if (System.getenv("SOCIALVPN_KEYSTORE") != null) signingConfig = signingConfigs.getByName("release")
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_11
        targetCompatibility = JavaVersion.VERSION_11
    }

    sourceSets["main"].jniLibs.srcDir(jniLibsDir)
    sourceSets["main"].java.srcDir(bindingsDir)
    packaging { jniLibs.useLegacyPackaging = false }
}

kotlin { jvmToolchain(17) }

/** The core for each ABI, with cargo-ndk (release: LTO, debug info split off by the NDK's strip). */
val cargoNdk by tasks.registering(Exec::class) {
    workingDir = repoRoot
    inputs.files(fileTree(repoRoot) { include("core/src/**", "bindings/src/**", "Cargo.toml", "Cargo.lock", "*/Cargo.toml") })
    outputs.dir(jniLibsDir)
    commandLine(
        listOf("cargo", "ndk") + abis.flatMap { listOf("-t", it) } +
            listOf("--platform", "26", "-o", jniLibsDir.get().asFile.path, "build", "--release", "--locked", "-p", "socialvpn-ffi"),
    )
}

/** The Kotlin bindings, generated from the host build of the same library (uniffi library mode). */
val uniffiBindings by tasks.registering(Exec::class) {
    workingDir = repoRoot
    inputs.files(fileTree(repoRoot) { include("bindings/src/**", "bindings/uniffi.toml", "Cargo.lock") })
    outputs.dir(bindingsDir)
    commandLine(
        "sh", "-c",
        "cargo build --locked --release -p socialvpn-ffi -p uniffi-bindgen && " +
            "target/release/uniffi-bindgen generate --library target/release/libsocialvpn_ffi.so " +
            "--language kotlin --out-dir '${bindingsDir.get().asFile.path}'",
    )
}

tasks.named("preBuild") { dependsOn(cargoNdk, uniffiBindings) }

dependencies {
    // JNA with its Android libjnidispatch.so for every ABI (the uniffi bindings load the core with it).
    implementation("net.java.dev.jna:jna:5.19.1@aar")
    // The Kotlin half of the platform TLS verifier (version pinned to Cargo.lock below).
    implementation("rustls:rustls-platform-verifier:latest.release")

    androidTestImplementation("androidx.test:runner:1.6.2")
    androidTestImplementation("androidx.test:core:1.6.1")
    androidTestImplementation("androidx.test.ext:junit:1.2.1")
    androidTestImplementation("androidx.test.espresso:espresso-core:3.7.0")
    androidTestImplementation("androidx.test.uiautomator:uiautomator:2.3.0")
}

// rustls-platform-verifier: the Kotlin component must be the version Cargo.lock holds for
// rustls-platform-verifier-android (its README's recipe).
abstract class RustlsVersion : ValueSource<String, RustlsVersion.Params> {
    interface Params : ValueSourceParameters {
        val lockFile: RegularFileProperty
    }

    override fun obtain(): String {
        val lines = parameters.lockFile.get().asFile.readLines()
        val at = lines.indexOfFirst { it.trim() == "name = \"rustls-platform-verifier-android\"" }
        val version = if (at < 0) null else lines.drop(at + 1)
            .firstOrNull { it.trimStart().startsWith("version = ") }
            ?.substringAfter('"', "")?.substringBefore('"', "")?.takeIf { it.isNotEmpty() }
        return version ?: error("rustls-platform-verifier-android not found in Cargo.lock")
    }
}

val rustlsVersion = providers.of(RustlsVersion::class.java) {
    parameters.lockFile.set(File(repoRoot, "Cargo.lock"))
}

configurations.configureEach {
    resolutionStrategy.eachDependency {
        if (requested.group == "rustls" && requested.name == "rustls-platform-verifier") {
            useVersion(rustlsVersion.get())
            because("the Kotlin component must match the crate's native half")
        }
    }
}
