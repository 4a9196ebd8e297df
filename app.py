"""MERLION Studio: ``streamlit run app.py``. The entry only builds the navigation; each page in
pages/ sets itself up (studio.page.setup), so a direct URL or a page run alone works too."""

import streamlit as st

from studio.page import PAGES

navigation = st.navigation(
    [st.Page(path, title=title, icon=icon, default=i == 0) for i, (path, title, icon) in enumerate(PAGES)]
)
navigation.run()
