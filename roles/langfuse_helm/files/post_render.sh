#!/bin/sh
# Helm's post-renderer for the Langfuse release (roles/langfuse_helm/files/post_render.py): run by the Python
# that runs Ansible, which has PyYAML. Helm 3 runs it by path (--post-renderer).
exec "${LANGFUSE_OPS_PYTHON:?set by the langfuse_helm role}" "$(dirname "$0")/post_render.py"
