use super::*;

/// An OVF 1.0 descriptor as VirtualBox 7 writes it (trimmed of vbox:Machine), with the
/// hardware vessel does not map: IDE and SATA controllers, sound, USB, a CD-ROM.
pub const VBOX_OVF: &str = r#"<?xml version="1.0"?>
<Envelope ovf:version="1.0" xml:lang="en-US" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:vbox="http://www.virtualbox.org/ovf/machine">
  <References>
    <File ovf:id="file1" ovf:href="deb-disk001.vmdk"/>
  </References>
  <DiskSection>
    <Info>List of the virtual disks used in the package</Info>
    <Disk ovf:capacity="64" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection>
    <Info>Logical networks used in the package</Info>
    <Network ovf:name="NAT"><Description>Logical network used by this appliance.</Description></Network>
    <Network ovf:name="HostOnly"><Description>Logical network used by this appliance.</Description></Network>
  </NetworkSection>
  <VirtualSystem ovf:id="deb">
    <Info>A virtual machine</Info>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements for a virtual machine</Info>
      <System><vssd:ElementName>Virtual Hardware Family</vssd:ElementName><vssd:InstanceID>0</vssd:InstanceID><vssd:VirtualSystemIdentifier>deb</vssd:VirtualSystemIdentifier><vssd:VirtualSystemType>virtualbox-2.2</vssd:VirtualSystemType></System>
      <Item><rasd:Caption>2 virtual CPU</rasd:Caption><rasd:ElementName>2 virtual CPU</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits><rasd:ElementName>1024 MB of memory</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>1024</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:ElementName>ideController0</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>PIIX4</rasd:ResourceSubType><rasd:ResourceType>5</rasd:ResourceType></Item>
      <Item><rasd:ElementName>sataController0</rasd:ElementName><rasd:InstanceID>4</rasd:InstanceID><rasd:ResourceSubType>AHCI</rasd:ResourceSubType><rasd:ResourceType>20</rasd:ResourceType></Item>
      <Item ovf:required="false"><rasd:ElementName>usb</rasd:ElementName><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceType>23</rasd:ResourceType></Item>
      <Item ovf:required="false"><rasd:ElementName>sound</rasd:ElementName><rasd:InstanceID>6</rasd:InstanceID><rasd:ResourceSubType>ensoniq1371</rasd:ResourceSubType><rasd:ResourceType>35</rasd:ResourceType></Item>
      <Item><rasd:AutomaticAllocation>true</rasd:AutomaticAllocation><rasd:Connection>NAT</rasd:Connection><rasd:ElementName>Ethernet adapter on 'NAT'</rasd:ElementName><rasd:InstanceID>7</rasd:InstanceID><rasd:ResourceSubType>E1000</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
      <Item><rasd:Connection>HostOnly</rasd:Connection><rasd:ElementName>Ethernet adapter on 'HostOnly'</rasd:ElementName><rasd:InstanceID>8</rasd:InstanceID><rasd:ResourceType>10</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>disk1</rasd:ElementName><rasd:HostResource>/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>9</rasd:InstanceID><rasd:Parent>4</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:AutomaticAllocation>true</rasd:AutomaticAllocation><rasd:ElementName>cdrom1</rasd:ElementName><rasd:InstanceID>10</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>15</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#;

#[test]
fn maps_what_virtualbox_writes_and_reports_the_rest() {
    let app = parse(VBOX_OVF).unwrap();
    assert_eq!(app.name, "deb");
    assert_eq!((app.cpus, app.memory_mib), (2, 1024));
    assert_eq!(
        app.disks,
        vec![OvfDisk {
            href: "deb-disk001.vmdk".into(),
            capacity: Some(64 << 20),
            file_size: None,
        }]
    );
    assert_eq!(app.nics, vec!["NAT", "HostOnly"]);
    let report = app.unmapped.join("\n");
    for what in [
        "ideController0",
        "sataController0",
        "usb (ResourceType 23)",
        "sound (ResourceType 35)",
        "cdrom1 (ResourceType 15)",
    ] {
        assert!(report.contains(what), "{what} missing from {report}");
    }
}

#[test]
fn reads_ovf_2_items_and_byte_units() {
    let text = r#"<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/2" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/2" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:epasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_EthernetPortAllocationSettingData" xmlns:sasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_StorageAllocationSettingData">
<References><File ovf:id="f" ovf:href="a.vmdk"/></References>
<DiskSection><Info>d</Info><Disk ovf:diskId="d1" ovf:fileRef="f" ovf:capacity="1073741824"/></DiskSection>
<VirtualSystem ovf:id="two"><Name>two-vm</Name><VirtualHardwareSection><Info>h</Info>
<Item><rasd:ElementName>cpu</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>4</rasd:VirtualQuantity></Item>
<Item><rasd:AllocationUnits>byte * 2^30</rasd:AllocationUnits><rasd:ElementName>mem</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
<StorageItem><sasd:ElementName>disk</sasd:ElementName><sasd:HostResource>ovf:/disk/d1</sasd:HostResource><sasd:InstanceID>3</sasd:InstanceID><sasd:ResourceType>17</sasd:ResourceType></StorageItem>
<EthernetPortItem><epasd:Connection>Bridged</epasd:Connection><epasd:ElementName>nic</epasd:ElementName><epasd:InstanceID>4</epasd:InstanceID><epasd:ResourceType>10</epasd:ResourceType></EthernetPortItem>
</VirtualHardwareSection></VirtualSystem></Envelope>"#;
    let app = parse(text).unwrap();
    assert_eq!(app.name, "two-vm");
    assert_eq!((app.cpus, app.memory_mib), (4, 2048));
    assert_eq!(app.disks[0].capacity, Some(1 << 30));
    assert_eq!(app.nics, vec!["Bridged"]);
    assert!(app.unmapped.is_empty());
}

#[test]
fn refuses_dtds_and_broken_references() {
    let dtd = format!(
        "<!DOCTYPE Envelope [<!ENTITY x \"{}\">]>{}",
        "a".repeat(10),
        VBOX_OVF.trim_start_matches("<?xml version=\"1.0\"?>\n")
    );
    assert!(parse(&dtd).is_err());
    let e = parse(&VBOX_OVF.replace("ovf:fileRef=\"file1\"", "ovf:fileRef=\"nope\"")).unwrap_err();
    assert!(e.to_string().contains("References does not list"), "{e}");
    let e = parse(&VBOX_OVF.replace("/disk/vmdisk1", "/disk/other")).unwrap_err();
    assert!(e.to_string().contains("DiskSection does not list"), "{e}");
    let e = parse(&VBOX_OVF.replace("<rasd:VirtualQuantity>2<", "<rasd:VirtualQuantity>999<"))
        .unwrap_err();
    assert!(e.to_string().contains("999 processors"), "{e}");
    let e = parse(&VBOX_OVF.replace(">MegaBytes<", ">furlongs<")).unwrap_err();
    assert!(e.to_string().contains("furlongs"), "{e}");
    assert!(parse("<notovf/>").is_err());
}

#[test]
fn units() {
    assert_eq!(unit_bytes("byte * 2^20").unwrap(), 1 << 20);
    assert_eq!(unit_bytes("byte*2^30").unwrap(), 1 << 30);
    assert_eq!(unit_bytes("MegaBytes").unwrap(), 1 << 20);
    assert_eq!(unit_bytes("byte").unwrap(), 1);
    assert!(unit_bytes("byte * 2^99").is_err());
}

#[test]
fn rendered_envelope_parses_back() {
    let spec = ExportSpec {
        name: "web & db",
        cpus: 3,
        memory_mib: 768,
        disks: vec![("web-disk1.vmdk".into(), 1234, 8 << 30)],
        nics: vec!["NAT", "Internal"],
    };
    let text = render(&spec);
    let app = parse(&text).unwrap();
    assert_eq!(app.name, "web & db");
    assert_eq!((app.cpus, app.memory_mib), (3, 768));
    assert_eq!(app.disks[0].href, "web-disk1.vmdk");
    assert_eq!(app.disks[0].capacity, Some(8 << 30));
    assert_eq!(app.disks[0].file_size, Some(1234));
    assert_eq!(app.nics, vec!["NAT", "Internal"]);
    assert_eq!(app.unmapped.len(), 1, "{:?}", app.unmapped);
}
