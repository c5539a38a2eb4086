"""How the functions reach Google Cloud: settings, the command plan, staging, the runner.

A regular package (not a namespace one) so that ``python deploy/deploy.py`` can import
``deploy.settings`` even though the script's own directory holds a module named ``deploy``.
"""
