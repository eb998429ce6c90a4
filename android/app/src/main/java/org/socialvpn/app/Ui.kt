package org.socialvpn.app

import android.app.Activity
import android.content.Context
import android.graphics.Typeface
import android.os.Build
import android.util.TypedValue
import android.view.View
import android.view.ViewGroup
import android.widget.LinearLayout
import android.widget.TextView
import kotlin.math.roundToInt

/**
 * The few helpers the screens share. The screens are built in code on the platform's own
 * widgets (no layout resources): the same sources build with Gradle and compile and run on
 * the JVM under Robolectric, where no resource compiler exists.
 */
internal object Ui {
    /** DeviceDefault DayNight where it exists (API 29+), else DeviceDefault light. */
    fun applyTheme(activity: Activity) {
        activity.setTheme(
            if (Build.VERSION.SDK_INT >= 29) android.R.style.Theme_DeviceDefault_DayNight
            else android.R.style.Theme_DeviceDefault_Light_DarkActionBar,
        )
    }

    fun Context.dp(value: Int): Int = (value * resources.displayMetrics.density).roundToInt()

    /** A vertical column with the screen's standard padding. */
    fun Context.column(padding: Int = 16): LinearLayout = LinearLayout(this).apply {
        orientation = LinearLayout.VERTICAL
        setPadding(dp(padding), dp(padding), dp(padding), dp(padding))
    }

    fun Context.row(): LinearLayout = LinearLayout(this).apply {
        orientation = LinearLayout.HORIZONTAL
        gravity = android.view.Gravity.CENTER_VERTICAL
    }

    enum class Style(val sp: Float, val bold: Boolean, val secondary: Boolean) {
        TITLE(20f, true, false), HEADING(14f, true, true), BODY(16f, false, false), DETAIL(14f, false, true)
    }

    fun Context.label(text: CharSequence = "", style: Style = Style.BODY): TextView = TextView(this).apply {
        this.text = text
        setTextSize(TypedValue.COMPLEX_UNIT_SP, style.sp)
        if (style.bold) setTypeface(typeface, Typeface.BOLD)
        if (style.secondary) alpha = 0.75f
    }

    /** Full width, wrapped height, with a top margin. */
    fun Context.wide(top: Int = 0): LinearLayout.LayoutParams =
        LinearLayout.LayoutParams(ViewGroup.LayoutParams.MATCH_PARENT, ViewGroup.LayoutParams.WRAP_CONTENT)
            .apply { topMargin = dp(top) }

    /** Takes the row's remaining width. */
    fun weighted(): LinearLayout.LayoutParams = LinearLayout.LayoutParams(0, ViewGroup.LayoutParams.WRAP_CONTENT, 1f)

    fun View.shown(visible: Boolean) {
        visibility = if (visible) View.VISIBLE else View.GONE
    }
}
