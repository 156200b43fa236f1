"""The page's layout: the module's panel on the left (the desktop's order: scan, model, Segment, step controls,
sliders, plot, Apply, edit, Continue, downloads), the slice views on the right. Every control has an ``id`` for the
browser tests and the screenshots."""
from __future__ import annotations

from trame.ui.vuetify3 import VAppLayout
from trame.widgets import client, html
from trame.widgets import vuetify3 as v

from . import tabs

# The upload: refused in the page above the limit (nothing is sent), else sent in chunks by trame-slicer's loader.
UPLOAD = ("const files = $event.target.files; "
          "const size = [...files].reduce((s, f) => s + f.size, 0); "
          "if (size > im_upload_limit) { im_error = `the upload holds ${(size / 1e6).toFixed(1)} MB; this server "
          "accepts at most ${(im_upload_limit / 1e6).toFixed(1)} MB (itermask web --max-upload-mb)`; } "
          "else { im_uploading = true; window.load_files_by_chunks(files, { trigger_name: 'im_upload_chunk' })"
          ".finally(() => { im_uploading = false; }); }")


# Two fields on a row: a short name (a model, "flair-3d"; a segment, "Anomaly") keeps room to be read, the long
# choice beside it (a policy, what Apply makes) takes the rest and is cut short if it must.
NAMED_FIELD = "flex: 0 0 130px;"
WIDE_FIELD = "flex: 1 1 0; min-width: 0;"


def _download(kind: str, name: str) -> str:
    return f"utils.download('{name}', trigger('im_download', ['{kind}']), 'application/octet-stream')"


def _slider(key: str, label: str, maximum, step: float, disabled: str, tooltip: str | None = None, **events):
    with html.Div(classes="mt-2"):
        html.Div(f"{label}: {{{{ {key}_label }}}}", id=f"{key}-label", classes="text-caption",
                 title=(tooltip,) if tooltip else None)
        v.VSlider(id=f"{key}-slider", v_model=(key,), min=0, max=(maximum,), step=step, density="compact",
                  hide_details=True, disabled=(disabled,), thumb_label=False, **events)


def build_page(page) -> VAppLayout:
    """The page of an :class:`.app.IterMaskPage`."""
    server = page.server
    server.state.trame__title = "IterMask"
    server.trigger("im_upload_chunk")(page.on_upload_chunk)
    server.trigger("im_download")(page.on_download)
    g = page._guarded
    with VAppLayout(server, full_height=True) as layout:
        layout.root.theme = "dark"
        client.ClientTriggers(mounted=tabs.ON_MOUNT)
        client.ClientStateChange(value=tabs.OWNER, change=tabs.ON_FREED)
        # A person who asks their system for less motion gets a still busy bar (Vuetify animates it regardless).
        client.Style(".im-panel .v-btn { text-transform: none; } html { overflow-y: hidden; } "
                     "@media (prefers-reduced-motion: reduce) { .im-panel .v-progress-linear * { animation: none; } }")
        with v.VMain(v_if=(tabs.ELSEWHERE,)):
            v.VAlert(tabs.MESSAGE, id="im-elsewhere", type="warning", classes="ma-8")
        with v.VNavigationDrawer(v_if=(tabs.MINE,), permanent=True, width=380, classes="im-panel pa-3"):
            html.Div("IterMask", classes="text-h6")
            html.Div("For research use only: not a medical device.", classes="text-caption mb-2")
            # --- scan ---
            with html.Div(classes="d-flex align-center"):
                v.VFileInput(id="im-upload", label="Open scan (.nii.gz, .nrrd, DICOM .zip)", density="compact",
                             hide_details=True, multiple=True, change=UPLOAD, disabled=("im_busy || im_uploading",),
                             clearable=False, prepend_icon="mdi-file-upload")
                v.VBtn("Load example", id="im-load-example", click=g(page.on_load_example), disabled=("im_busy",),
                       classes="ml-2", size="small")
            v.VSelect(id="im-volume", label="Input volume", v_model=("im_volume",), items=("im_volumes",),
                      density="compact", hide_details=True, classes="mt-2", disabled=("im_busy",))
            v.VSelect(id="im-brain-mask", label="Brain mask (empty: the scan's non-zero region)", clearable=True,
                      v_model=("im_brain_mask",), items=("im_masks",), density="compact", hide_details=True,
                      classes="mt-2", disabled=("im_busy",))
            with html.Div(classes="d-flex mt-2"):
                v.VSelect(id="im-model", label="Model", v_model=("im_model",), items=("im_models",),
                          density="compact", hide_details=True, disabled=("im_busy",), style=NAMED_FIELD)
                v.VSelect(id="im-policy", label="Policy", v_model=("im_policy",), items=("im_policies",),
                          density="compact", hide_details=True, classes="ml-2", disabled=("im_busy",),
                          style=WIDE_FIELD)
            # --- running ---
            v.VBtn("Segment", id="im-segment", block=True, color="primary", classes="mt-3",
                   click=g(page.on_segment), disabled=("im_busy || !im_volume",))
            with html.Div(classes="d-flex flex-wrap mt-2", style="gap: 4px;"):
                v.VBtn("Initialize", id="im-initialize", size="small", click=g(page.on_initialize),
                       disabled=("im_busy || !im_volume",))
                v.VBtn("Step", id="im-step", size="small", click=g(page.on_step), disabled=("im_busy || !im_ready",))
                v.VBtn("Back", id="im-back", size="small", click=g(page.on_back),
                       disabled=("im_busy || !im_stepped",))
                v.VBtn("Run", id="im-run", size="small", click=g(page.on_run), disabled=("im_busy || !im_ready",))
                v.VBtn("Cancel", id="im-cancel", size="small", color=("im_can_cancel ? 'warning' : undefined",),
                       click=g(page.on_cancel), disabled=("!im_can_cancel",))
                v.VBtn("Reset", id="im-reset", size="small", click=g(page.on_reset),
                       disabled=("im_busy || !im_ready",))
            v.VProgressLinear(indeterminate=True, active=("im_busy",), classes="mt-2")
            html.Div("{{ im_status }}", id="im-status", classes="text-body-2 mt-1")
            v.VAlert("{{ im_error }}", id="im-error", v_if=("im_error",), type="error", density="compact",
                     classes="mt-1", closable=True, click_close="im_error = ''")
            # --- sliders and plot ---
            html.Div("Iteration {{ im_iteration }} of {{ Math.max(im_iterations - 1, 0) }}", id="im-iteration-label",
                     classes="text-caption mt-2")
            v.VSlider(id="im-iteration-slider", v_model=("im_iteration",), min=0,
                      max=("Math.max(im_iterations - 1, 0)",), step=1, density="compact", hide_details=True,
                      disabled=("im_busy || !im_stepped",))
            _slider("im_tau", "τ", "im_tau_max", 0.01, "im_busy || !im_ready", "im_tau_tooltip",
                    end=(g(page.on_tau), "[$event]"))
            html.Div("τ_stop: {{ im_tau_stop_label }}", id="im-tau-stop", classes="text-caption")
            _slider("im_threshold", "Segmentation threshold", "im_threshold_max", 0.01,
                    "im_busy || !im_stepped", "im_threshold_tooltip")
            v.VCheckbox(id="im-show-map", label="Show anomaly map", v_model=("im_show_map",), density="compact",
                        hide_details=True, update_modelValue=(g(page.on_show_map), "[]"))
            html.Div(id="im-plot", v_html=("im_plot",), classes="mt-1")
            # --- result ---
            with html.Div(classes="d-flex mt-2"):
                v.VSelect(id="im-source", label="Apply", v_model=("im_source",), items=("im_sources",),
                          density="compact", hide_details=True, style=WIDE_FIELD)
                v.VTextField(id="im-segment-name", label="Segment name", v_model=("im_segment_name",),
                             density="compact", hide_details=True, classes="ml-2", style=NAMED_FIELD)
            v.VBtn("Apply", id="im-apply", block=True, classes="mt-2", click=g(page.on_apply),
                   disabled=("im_busy || !im_stepped",))
            with html.Div(classes="d-flex align-center mt-2"):
                with v.VBtnToggle(id="im-effect", v_model=("im_effect",), mandatory=True, density="compact",
                                  disabled=("im_busy || !im_has_result",)):
                    v.VBtn("View", id="im-effect-none", value="none", size="small")
                    v.VBtn("Paint", id="im-effect-paint", value="paint", size="small")
                    v.VBtn("Erase", id="im-effect-erase", value="erase", size="small")
                v.VBtn(id="im-undo", icon="mdi-undo", size="small", variant="text", click=g(page.on_undo),
                       disabled=("im_busy || !im_has_result",), classes="ml-1")
            v.VSlider(id="im-brush", label="Brush %", v_model=("im_brush",), min=1, max=20, step=1,
                      density="compact", hide_details=True, disabled=("!im_has_result",))
            v.VBtn("Continue from edited segmentation", id="im-continue", block=True, classes="mt-1",
                   click=g(page.on_continue), disabled=("im_busy || !im_has_result",))
            with html.Div(classes="d-flex flex-wrap mt-2", style="gap: 4px;"):
                v.VBtn("Mask .nii.gz", id="im-download-nii", size="small", prepend_icon="mdi-download",
                       click=_download("nii", "itermask-mask.nii.gz"), disabled=("!im_has_result",))
                v.VBtn("Segmentation .seg.nrrd", id="im-download-seg", size="small", prepend_icon="mdi-download",
                       click=_download("seg", "itermask-result.seg.nrrd"), disabled=("!im_has_result",))
                v.VBtn("DICOM SEG", id="im-download-dcm", v_if=("im_dicom",), size="small",
                       prepend_icon="mdi-download", click=_download("dcm", "segmentation.dcm"),
                       disabled=("!im_has_result",))
        with v.VMain(v_if=(tabs.MINE,), style="height: 100vh;"):
            with html.Div(classes="d-flex align-center px-2", style="height: 44px; gap: 12px;"):
                with v.VBtnToggle(v_model=("im_layout",), mandatory=True, density="compact", id="im-layouts"):
                    v.VBtn("{{ name }}", v_for="name in im_layouts", value=("name",), size="small")
                html.Div("Window", classes="text-caption ml-4")
                v.VRangeSlider(id="im-window", v_model=("im_window",), min=("im_window_range[0]",),
                               max=("im_window_range[1]",), density="compact", hide_details=True,
                               style="max-width: 260px;")
            with html.Div(style="height: calc(100vh - 44px); position: relative;"):
                page.layout_manager.initialize_layout_grid(layout)
    return layout
