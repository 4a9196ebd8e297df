"""MERLION Studio: ``streamlit run app.py``. The entry only builds the navigation; each page in
pages/ sets itself up (studio.page.setup), so a direct URL or a page run alone works too."""

import streamlit as st

from studio.navigation import install as keep_page_switches
from studio.page import PAGES

keep_page_switches()  # a live fragment's rerun must not undo a click on another page

navigation = st.navigation(
    [st.Page(path, title=title, icon=icon, default=i == 0) for i, (path, title, icon) in enumerate(PAGES)]
)
navigation.run()
