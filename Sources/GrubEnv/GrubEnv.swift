import HCOSCore
