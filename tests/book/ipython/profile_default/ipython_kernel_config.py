# Kernel settings for the notebooks run by the tests (chapters/conftest.py points
# IPYTHONDIR here). Only errors are logged, so start-up warnings such as the
# TCP notice some machines print do not reach stderr and fail strict nbval.
c = get_config()  # noqa: F821
c.IPKernelApp.log_level = "ERROR"
