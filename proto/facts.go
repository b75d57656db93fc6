package proto

// Facts is what the discovery system (`fleetboot discover`) reports about a
// machine it runs on, read from /sys and /proc. Field names are the names
// selectors use: `facts.memory_gib`, `facts.cpus`, `facts.dmi.vendor`,
// `facts.nics`, `facts.disks[0].size_gib`. Installers may report their own
// JSON through the same callback; readers must accept missing fields.
type Facts struct {
	V          int         `json:"v"`
	BootMAC    string      `json:"boot_mac"`            // the NIC that booted (canonical colon form)
	Firmware   string      `json:"firmware"`            // "bios" or "uefi"
	SecureBoot bool        `json:"secure_boot"`         // UEFI Secure Boot enforced
	CPUModel   string      `json:"cpu_model,omitempty"` // /proc/cpuinfo "model name"
	CPUs       int         `json:"cpus"`                // logical CPUs online
	MemoryGiB  float64     `json:"memory_gib"`          // installed (online memory blocks; else MemTotal), GiB, two decimals
	DMI        DMIFacts    `json:"dmi"`                 // /sys/class/dmi/id
	NICs       []NICFacts  `json:"nics"`                // every NIC with a MAC, loopback excluded, by name
	Disks      []DiskFacts `json:"disks"`               // whole block devices (no partitions, loop, ram), by name
	Kernel     string      `json:"kernel,omitempty"`    // uname release of the discovery kernel
}

// DMIFacts is the machine's SMBIOS identity.
type DMIFacts struct {
	Vendor  string `json:"vendor,omitempty"`  // sys_vendor
	Product string `json:"product,omitempty"` // product_name
	Serial  string `json:"serial,omitempty"`  // product_serial
	UUID    string `json:"uuid,omitempty"`    // product_uuid
}

// NICFacts is one network interface.
type NICFacts struct {
	Name      string `json:"name"`
	MAC       string `json:"mac"`                  // canonical colon form
	Link      bool   `json:"link"`                 // carrier up
	SpeedMbps int    `json:"speed_mbps,omitempty"` // 0 if unknown
	Driver    string `json:"driver,omitempty"`
}

// DiskFacts is one whole disk.
type DiskFacts struct {
	Name       string  `json:"name"` // vda, sda, nvme0n1
	SizeGiB    float64 `json:"size_gib"`
	Model      string  `json:"model,omitempty"`
	Serial     string  `json:"serial,omitempty"`
	Rotational bool    `json:"rotational"`
}
