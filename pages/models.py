"""Models: the zoo, a model's layers, and uploading a checkpoint of your own."""

import streamlit as st

from core.models import catalog, sources
from core.models.uploads import save_upload

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
zoo_names = [n for n in names if sources.parse(n).source == "zoo/"]
like = st.selectbox("Architecture (the zoo model it was trained like)", ["as recorded in the file"] + zoo_names,
                    key="models_like")
label = st.text_input("Name", value=upload.name.rsplit(".", 1)[0] if upload else "", key="models_name")
if st.button("Add checkpoint", disabled=upload is None):
    try:
        added = save_upload(upload.getvalue(), upload.name, label,
                            like=None if like == "as recorded in the file" else like)
    except ValueError as exc:  # CheckpointError is one; importing it here would import torch on first paint
        st.error(f"Could not add {upload.name}: {exc}")
    else:
        st.success(f"Added **{added}**: pick it as sender or receiver in the sidebar.")
