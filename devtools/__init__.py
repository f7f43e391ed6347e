"""Development services outside the wheel: the mock provider, free ports, throwaway servers, the dev stack."""
