"""The rules, as plain functions of ids and values: views, jobs and tests call them.

No module here touches request, current_user or url_for, nor imports from webapp.web.
"""
