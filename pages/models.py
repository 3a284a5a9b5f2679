"""Models: the zoo, a model's layers, and uploading a checkpoint of your own."""

import streamlit as st

from core.models import catalog, sources
from core.models.uploads import UploadExists, default_name, save_upload
from ui import navigation
from ui.text import plain

navigation.through_app()

st.title("Models")
st.dataframe(catalog.zoo_table(), hide_index=True,
             column_config={"test accuracy": st.column_config.NumberColumn(format="%.4f"),
                            "parameters": st.column_config.NumberColumn(format="localized")})
st.caption("Every zoo model was trained on Fashion-MNIST by `python -m core zoo train` (its exact command is in "
           "assets/zoo/manifest.json) and is checked against its sha256 when loaded. Any of them followed by "
           "`@random` is the same architecture with random weights (the controls).")

st.subheader("Layers")
names = catalog.model_names()
name = st.selectbox("Model", names, key="models_model", bind="query-params")
st.caption(catalog.model_label(name))
st.dataframe([{"layer": n, "shape (C, H, W)": " × ".join(map(str, shape))} for n, shape in catalog.layers_of(name)],
             hide_index=True)

st.subheader("Add your own checkpoint")
st.caption("A `.safetensors` file, or a `torch.save(model.state_dict())` file, of one of the zoo's architectures. "
           "Files are opened as data only (weights-only loading): a file that would run code is refused.")
upload = st.file_uploader("Checkpoint", type=["safetensors", "pt", "pth", "bin"], key="models_upload")
if upload is not None and st.session_state.get("models_name_of") != upload.file_id:
    # A text_input's value= is ignored once it has state: a new file sets the name through its key.
    st.session_state.models_name = default_name(upload.name)
    st.session_state.models_name_of = upload.file_id
zoo_names = [n for n in names if sources.parse(n).source == "zoo/"]
like = st.selectbox("Architecture (the zoo model it was trained like)", ["as recorded in the file"] + zoo_names,
                    key="models_like")
label = st.text_input("Name", key="models_name", help="Empty: the file's name without its extension.")


def add(replace: bool) -> None:
    try:
        added = save_upload(upload.getvalue(), upload.name, label, replace=replace,
                            like=None if like == "as recorded in the file" else like)
    except UploadExists as exc:  # asked below, on this run and the next, until Replace or Keep is clicked
        st.session_state.models_replacing = (upload.file_id, label, exc.name)
    except ValueError as exc:  # CheckpointError is one; importing it here would import torch on first paint
        st.error(f"Could not add {plain(upload.name)}: {plain(exc)}")
    else:
        st.success(f"Added **{plain(added)}**: pick it as sender or receiver in the sidebar.")


if st.button("Add checkpoint", disabled=upload is None):
    add(replace=False)
asking = st.session_state.get("models_replacing")
if asking and (upload is None or asking[:2] != (upload.file_id, label)):  # another file or name: a new question
    asking = st.session_state.models_replacing = None
if asking:
    question = st.empty()
    with question.container():
        st.warning(f"A checkpoint named **{plain(asking[2])}** exists already. Replace it with "
                   f"{upload.name}? Runs of the old weights stay stored. Or change the Name to keep both.")
        yes, no = st.columns(2)
        replace = yes.button("Replace", key="models_replace")
        keep = no.button("Keep the old one", key="models_keep")
    if replace or keep:
        st.session_state.models_replacing = None
        question.empty()
        if replace:
            add(replace=True)
        else:
            st.info(f"Kept the old **{plain(asking[2])}**; nothing was added.")
